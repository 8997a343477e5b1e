"""CRL-SR: blind SR of multi-source, spatially variant degradations via contrastive
representation learning (Zhang, Lu, Zhan, Yu, arXiv 2107.00708; no official code).

degrade.py (the generator), positions.py (LR/HR position correspondence), networks.py
(E_l + SR decoder deployed; E_h, E_f, D_rec, heads auxiliary), train.py (step, harness run).
Design notes: ../shared/methods/crl.md; every choice the paper does not fix is in configs/crl.py.
"""
