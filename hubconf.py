"""torch.hub entry points: the official AV-MAE weights by name (`avmae weights` lists them).

    model = torch.hub.load("OWNER/avmae", "vggsound_av")                    # pretraining model (AVMAE)
    model = torch.hub.load("OWNER/avmae", "audioset_av_finetuned_av")       # MBT classifier, 527 classes

One entry point per row of avmae.interop.weights.OFFICIAL_WEIGHTS, named by its name without
"scenic/" and with "_" for "-". Each returns what `avmae.load(NAME)` returns: the model in eval mode on
the CPU, with its config as `.config` and a classifier's class names as `.labels`. The first call
downloads the checkpoint into avmae's cache ($AVMAE_HOME, else ~/.cache/avmae), verifies and converts
it; later calls read the converted run from the cache.
"""

import os
import sys

dependencies = ["torch", "av", "numpy", "PIL", "safetensors", "msgpack", "tqdm"]  # modules loading imports

# torch.hub puts this folder on sys.path; the package lives in src/ (a checkout, not an install).
_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src")
if os.path.isdir(os.path.join(_SRC, "avmae")) and _SRC not in sys.path:
    sys.path.insert(0, _SRC)

from avmae.interop.weights import OFFICIAL_WEIGHTS as _OFFICIAL


def _entry_point(name, what):
    def load(pretrained=True):
        if not pretrained:
            raise ValueError(f"{name} is defined by its official weights: call it with pretrained=True "
                             "(for a fresh model, use avmae's presets: `avmae presets`)")
        import avmae
        return avmae.load(name)

    load.__name__ = load.__qualname__ = _OFFICIAL[name].hub_name
    load.__doc__ = f"{what} (`avmae.load('{name}')`); pretrained=True downloads it on first use."
    return load


for _name, _weights in _OFFICIAL.items():
    globals()[_weights.hub_name] = _entry_point(_name, _weights.what)
