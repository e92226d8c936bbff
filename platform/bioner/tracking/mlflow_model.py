"""Entry file of the logged MLflow model (models from code: no pickled object is stored)."""

import mlflow.models

from bioner.tracking.pyfunc import BioNERPyfunc

mlflow.models.set_model(BioNERPyfunc())
