"""ElasticNet on scikit-learn's diabetes data, with plain MLflow calls only (no labrun).

Like MLflow's classic wine example: ``python train.py ALPHA L1_RATIO [SEED] [SLEEP_S]``
fits, logs the parameters and ``rmse``/``mae``/``r2`` on a held-out split, and logs the
model. The data ships inside scikit-learn: nothing is downloaded. ``SLEEP_S`` pauses
between the fit's warm-started stages, so a demo can interrupt a run mid-way.
"""
import sys
import time

import mlflow
import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.linear_model import ElasticNet
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split


def main(argv):
    alpha = float(argv[0]) if len(argv) > 0 else 0.5
    l1_ratio = float(argv[1]) if len(argv) > 1 else 0.5
    seed = int(float(argv[2])) if len(argv) > 2 else 0
    sleep_s = float(argv[3]) if len(argv) > 3 else 0.0
    x, y = load_diabetes(return_X_y=True, as_frame=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=seed)
    with mlflow.start_run():
        mlflow.log_params({"alpha": alpha, "l1_ratio": l1_ratio, "seed": seed})
        train = mlflow.data.from_pandas(x_train.assign(target=y_train), name="diabetes-train",
                                        targets="target", source="sklearn.datasets.load_diabetes")
        mlflow.log_input(train, context="training")
        model = ElasticNet(alpha=alpha, l1_ratio=l1_ratio, random_state=seed, warm_start=True,
                           max_iter=50)
        for stage in range(5):  # warm-started stages: a learning curve, and a point to stop at
            model.fit(x_train, y_train)
            pred = model.predict(x_test)
            mlflow.log_metric("rmse", float(np.sqrt(mean_squared_error(y_test, pred))), step=stage)
            time.sleep(sleep_s)
        rmse = float(np.sqrt(mean_squared_error(y_test, pred)))
        mlflow.log_metrics({"mae": float(mean_absolute_error(y_test, pred)),
                            "r2": float(r2_score(y_test, pred))})
        print(f"ElasticNet(alpha={alpha:g}, l1_ratio={l1_ratio:g}) seed {seed}: rmse={rmse:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
