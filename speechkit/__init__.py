"""speechkit: speech recognition and translation with the speech branch of Phi-4-multimodal."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("speechkit")
except PackageNotFoundError:  # running from a checkout without install
    __version__ = "0.0.0+checkout"
