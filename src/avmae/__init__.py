"""avmae: Audiovisual Masked Autoencoders (Georgescu et al., ICCV 2023) in PyTorch.

`avmae.load(RUN_OR_CHECKPOINT)` and `avmae.load_clip(path, cfg)` are the library API (api.py);
they are imported on first use, so `import avmae` stays light for the command line.
"""

__version__ = "0.1.0"
__all__ = ["load", "load_clip"]


def __getattr__(name: str):
    if name in __all__:
        from avmae import api
        return getattr(api, name)
    raise AttributeError(f"module 'avmae' has no attribute '{name}'")
