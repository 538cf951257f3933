"""leafkit: the local data matrix G(x, w) of a classifier, its foliation, and paths on its leaves.

Companion code to L. Grementieri and R. Fioresi, *Model-Centric Data Manifold: The Data Through
the Eyes of the Model*, SIAM J. Imaging Sciences 15(3), 2022.
"""

from importlib import metadata as _metadata

try:  # the one version is pyproject.toml's, read from the installed metadata
    __version__ = _metadata.version("leafkit")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+unknown"

# data, models, training
from .cache import cache_dir, default_device
from .data import MNISTData, denormalize, load_mnist, normalize, pixel_bounds
from .models import MLP, KerasCifarCNN, MnistCNN, VGG11BN, activation, build_model
from .reproducibility import VERDICTS, environment_summary, report_claim, seed_everything
from .training import (CheckpointError, TrainResult, accuracy, reference_model, reference_run,
                       steps_for_epochs, train)

# geometry of G (eqs. 2.4-2.5, 3.2-3.3), projections, brackets (eq. 3.5), paths (Alg. 4.1)
from .checks import check_batch, check_jacobian, check_model, check_scores, eval_mode
from .geometry import (kl_divergence, kl_from_scores, local_data_matrix,
                       local_data_matrix_from_jacobian, local_data_spectrum, local_data_trace,
                       local_data_trace_from_jacobian, log_prob_jacobian,
                       log_prob_jacobian_from_scores, numerical_rank, score_jacobian)
from .fisher import (fisher_vector_product, local_fisher_matrix, log_prob_parameter_jacobian,
                     score_balance)
from .projection import default_rtol, project_kernel, project_tangent, tangent_basis
from .frobenius import (involutivity_residual, lie_brackets, log_prob_hessian_vector_products,
                        parameter_involutivity_residual, parameter_lie_brackets,
                        score_hessian_vector_products)
from .paths import (PROJECTIONS, PathResult, WalkOptions, horizontal_direction, horizontal_path,
                    vertical_path)

# theory chapters (Sections 2-3): Table 1, the KL expansions, linear regions, plane fields, the
# involutivity survey
from .tables import DATASET_SHAPES, Table, format_bytes, memory_table
from .expansions import kl_second_order, parameter_kl_second_order
from .regions import (activation_patterns, count_maxpool_ties, principal_angles,
                      tangent_angles_along)
from .planes import PLANE_FIELDS, PlaneField, circle
from .survey import ARCHITECTURES, SurveyCase, involutivity_survey, survey_models

# horizontal-path experiments (Figures 4-6): example images, measurements of a path
from .examples import ExamplePairs, example_pairs, first_of_class, mirror, unsure_pairs
from .path_metrics import (Transition, classes_visited, entropy, interpolation_gap,
                           kernel_fraction, linear_interpolation, path_summary, plateau_change,
                           segment_distance, settling_step, transitions)
from .authors import CONFIDENT, lstsq_drivers, tenth_direction_overlaps

# CIFAR-10 (Appendix A, Figure 7): full data and VGG-11, or the offline pieces of two wheels
from .cifar import (CIFAR_BOUNDS, CIFAR_CLASSES, CIFARData, WheelError, active_logits,
                    cifar_reference_model, describe_network, keras_cifar_cnn, load_cifar10)

# the trace of G through training (Figure 2) and paths across leaves (Figure 3)
from .monitoring import numerical_ranks, trace_hook, trace_run

# plots (line plots; image plots) and interactive explorers
from .plots import (plot_involutivity_survey, plot_kl_check, plot_path_distances,
                    plot_plane_fields, plot_rank_vs_tolerance, plot_spectra, plot_trace_curve,
                    plot_walk)
from .viz import frame_figure, path_and_interpolation, path_scrubber, path_strip, show_images
from .widgets import cross_leaf_explorer, involutivity_explorer, path_explorer
