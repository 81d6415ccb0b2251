"""Command-line entry points, one per stage (`python -m stages.<name> key=value ...`)."""
import warnings

# pytorchvideo's import-time use of torch.jit.script warns on current torch; not actionable for users.
warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
