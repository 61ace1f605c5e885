"""Views of a [`GaussianMixture`][activa_ppl.mixture.GaussianMixture] for people and other
libraries: a short ``repr``, samples as a pandas ``DataFrame`` with the variable names, and ArviZ
data. A mixin, so that ``mixture.py`` stays about the distribution itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["MixtureViews"]


class MixtureViews:
    """Methods that [`GaussianMixture`][activa_ppl.mixture.GaussianMixture] inherits:
    ``repr``, [`to_dataframe`][activa_ppl.mixture_views.MixtureViews.to_dataframe] and
    [`to_inference_data`][activa_ppl.mixture_views.MixtureViews.to_inference_data]."""

    def __repr__(self) -> str:
        names = self.variable_names
        if names is None:
            shown = f"{self.num_vars} variables"
        else:
            shown = ", ".join(names[:6]) + (f", … ({len(names)} in all)" if len(names) > 6 else "")
        batch = f"batch_shape={self.batch_shape}, " if self.batch_shape else ""
        intervention = f", {self.intervention}" if getattr(self, "intervention", None) else ""
        return f"GaussianMixture({batch}{self.num_components} components over {shown}{intervention})"

    def to_dataframe(self, n: int, seed: Any):
        """``n`` samples as a ``pandas.DataFrame`` whose columns are the variable names.

        The same draws as ``sample(n, seed)`` (X0, X1, … when the mixture has no names). A batch
        of shape ``(T,)`` gives ``n·T`` rows with an extra ``task`` column (0..T-1), task-major.
        """
        import pandas as pd

        if len(self.batch_shape) > 1:
            raise ValueError(f"to_dataframe needs batch shape () or (T,); got {self.batch_shape}")
        names = list(self.variable_names or [f"X{i}" for i in range(self.num_vars)])
        draws = np.asarray(self.sample(n, seed))  # (n, [T,] d)
        if not self.batch_shape:
            return pd.DataFrame(draws, columns=names)
        tasks = self.batch_shape[0]
        frame = pd.DataFrame(draws.transpose(1, 0, 2).reshape(tasks * n, -1), columns=names)
        frame.insert(0, "task", np.repeat(np.arange(tasks), n))
        return frame

    def to_inference_data(self, observed: Any = None, **kwargs: Any):
        """ArviZ data of this prediction and (optionally) held-out samples ``observed``:
        [`activa_ppl.arviz_io.to_inference_data`][activa_ppl.arviz_io.to_inference_data]
        ``(self, observed, **kwargs)``."""
        from activa_ppl.arviz_io import to_inference_data

        return to_inference_data(self, observed, **kwargs)
