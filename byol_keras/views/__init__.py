"""BYOL's augmentation views, one concept a module.

- `augment.BYOLAugment`: both views of a batch, the paper's two (Table 6, `paper.view_configs`).
- `view.BYOLView`: one view (crop, flip, colour jitter, grayscale, blur, solarize, normalise).
- `layer_views.LayerViews`: two views from any Keras 3 or KerasCV preprocessing layers (a user's own).
- The maths the views are made of: `geometry` (crop boxes, resizes as matrix products), `colour` (jitter,
  grayscale, solarize), `blur`; their random numbers: `randomness` (`keyed_draw`).

    from byol_keras.views import BYOLAugment
"""

from byol_keras.views.augment import BYOLAugment
from byol_keras.views.layer_views import LayerViews
from byol_keras.views.paper import view_configs
from byol_keras.views.randomness import keyed_draw
from byol_keras.views.view import BYOLView

__all__ = ["BYOLAugment", "BYOLView", "LayerViews", "keyed_draw", "view_configs"]
