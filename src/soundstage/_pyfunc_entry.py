"""MLflow *model from code* entry: the file MLflow stores with a ``pipeline`` model and runs to get it.

It only names the class of the installed package (no pickled object): see :mod:`soundstage.pyfunc`.
"""

import mlflow

from soundstage.pyfunc import PipelineModel

mlflow.models.set_model(PipelineModel())
