"""DRTL: distortion-relation guided transfer learning (knowledge graph, reweighting, MAML).

Public API re-exported here; see relation.py, reweight.py, maml.py, graph_io.py.
"""
from jaxsr.methods.drtl.graph_io import graph_matrix, load_graph, save_graph, save_heatmap
from jaxsr.methods.drtl.maml import (MetaConfig, inner_adapt, maml_task_loss, meta_config,
                                     meta_grads)
from jaxsr.methods.drtl.relation import (DistortionRelationNet, DRNTrainResult, drn_accuracy,
                                         drn_loss, drn_train_step, embed, fan_in_normal, init_drn,
                                         knowledge_graph, make_drn_train_step, memory_bank,
                                         preprocess, prototype_logits, random_crops,
                                         target_embedding, train_drn)
from jaxsr.methods.drtl.reweight import (RelationWeightState, embedding_weights, get_weights,
                                         gradient_weights, per_task_grads,
                                         relation_weighted_sum, relation_weights, set_weights,
                                         tree_cosine, uniform_weights, weighted_sum)

__all__ = [
    "DRNTrainResult", "DistortionRelationNet", "MetaConfig", "RelationWeightState",
    "drn_accuracy", "drn_loss", "drn_train_step", "embed", "embedding_weights", "fan_in_normal",
    "get_weights",
    "gradient_weights", "graph_matrix", "init_drn", "inner_adapt", "knowledge_graph",
    "load_graph", "make_drn_train_step",
    "maml_task_loss", "memory_bank", "meta_config", "meta_grads", "per_task_grads", "preprocess",
    "prototype_logits", "random_crops", "relation_weighted_sum", "relation_weights",
    "save_graph", "save_heatmap", "set_weights", "target_embedding", "train_drn", "tree_cosine",
    "uniform_weights", "weighted_sum",
]
