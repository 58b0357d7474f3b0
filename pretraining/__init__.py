"""The pre-training stage: ``polycl_pretrain``."""
