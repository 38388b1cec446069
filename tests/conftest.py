import torch

torch.set_num_threads(1)  # CI has 2 cores; tests run many small models
