"""SparseBERT (Xu et al., NAACL 2021): the sparsity schedule and magnitude masks, the
distillation losses, the training loop, and sparse kernels to run the result."""
