"""PCL-SR (Wu et al., "A Practical Contrastive Learning Framework for Single-Image
Super-Resolution", TNNLS 2023): an SR network fine-tuned with L1 + alpha * L_CL, where L_CL
contrasts the SR image against sharpened positives and blurred negatives in the feature space of a
discriminator on Haar detail bands that is trained alongside with a dual contrastive loss L_CLD.

wavelet.py  one-level orthonormal Haar DWT / inverse, the 9 detail-band input
samples.py  positives (HR + 3 sharpened) and negatives (bicubic LR + 3 blurred), on device
losses.py   L_CL (InfoNCE and cosine forms) and L_CLD, composed from jaxsr.losses
train.py    the embedding network, the two-update step, train_and_evaluate, deployable
"""
