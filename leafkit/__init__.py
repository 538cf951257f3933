"""leafkit: the local data matrix G(x, w) of a classifier, its foliation, and paths on its leaves.

Companion code to L. Grementieri and R. Fioresi, *Model-Centric Data Manifold: The Data Through
the Eyes of the Model*, SIAM J. Imaging Sciences 15(3), 2022.
"""

__version__ = "0.1.0"

# data, models, training
from .cache import cache_dir, default_device
from .data import MNISTData, denormalize, load_mnist, normalize, pixel_bounds
from .models import MLP, MnistCNN, activation, build_model
from .reproducibility import environment_summary, seed_everything
from .training import (CheckpointError, TrainResult, accuracy, reference_model, reference_run,
                       steps_for_epochs, train)
from .viz import show_images

# geometry of G (eqs. 2.4-2.5, 3.2-3.3), projections, brackets (eq. 3.5), paths (Alg. 4.1)
