"""The bottom layer: modules and model surgery that know torch (and transformers' module layout), nothing of
ladasearch above them.

    layers   FactorizedLinear / FactorizedEmbedding (W = A @ B.T) and ``replace_module``
    units    attention heads and FFN neurons of an encoder layer; narrowing layers to recorded widths
    masks    pruning masks: read, fold, count, copy a masked model
    losses   the task loss on gold labels
    shared   tensors that pickle as numpy arrays, so that Ray's object store shares them between trials

``layers`` and ``units`` are also the first part of the modeling file every HF export carries, so they import
only torch.  The import contract (``.importlinter``) keeps everything here free of the layers above.
"""
