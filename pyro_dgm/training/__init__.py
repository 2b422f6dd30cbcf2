"""The pieces :func:`pyro_dgm.fit` is made of, each small enough to read on its own.

* :mod:`.devices`: which device a run trains on (``"auto"``, ``"cuda:N"``, one per rank).
* :mod:`.batching`: reproducible, resumable batches of a tensor, Dataset or
  DataLoader, sharded across ranks as ``DistributedSampler`` shards.
* :mod:`.optimizers`: one optimizer (and scheduler) per parameter group.
* :mod:`.distributed`: the process group under ``torchrun``: joining it,
  broadcasting rank 0's state, averaging gradients, agreeing on decisions.
* :mod:`.run_state`: what a checkpoint holds and how a run resumes from it.
* :mod:`.compiling`: ``torch.compile`` of the networks a program calls.

``pyro_dgm/fit.py`` keeps the loop itself.
"""
