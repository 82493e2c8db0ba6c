"""Model registry: name -> Recommender class (each class carries its Config dataclass)."""
from recsys_kit.config import register_model_configs
from recsys_kit.models.base import Recommender
from recsys_kit.models.ease import EASE
from recsys_kit.models.ease_recency import EASERecency
from recsys_kit.models.ease_user import EASEUser
from recsys_kit.models.multidae import MultiDAE
from recsys_kit.models.multidae_side import MultiDAESide
from recsys_kit.models.multivae import MultiVAE
from recsys_kit.models.popularity import Popularity
from recsys_kit.models.recvae import RecVAE
from recsys_kit.models.sasrec import SASRec
from recsys_kit.models.transition import Transition

REGISTRY: dict[str, type[Recommender]] = {
    "popularity": Popularity,
    "multidae": MultiDAE,
    "multidae_side": MultiDAESide,
    "multivae": MultiVAE,
    "ease": EASE,
    "ease_recency": EASERecency,
    "ease_user": EASEUser,
    "transition": Transition,
    "sasrec": SASRec,
    "recvae": RecVAE,
}
# config.py builds [model] from these; it does not import the models (they import config).
register_model_configs({name: model.Config for name, model in REGISTRY.items()})


def build_model(config, seed: int, device: str) -> Recommender:
    """A fresh model from a RunConfig, seeded per fold by the caller."""
    return REGISTRY[config.model_name](config.model, config.train, seed=seed, device=device)
