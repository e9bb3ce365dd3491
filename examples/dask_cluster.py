"""Limited calls on a Dask cluster.

Dask's worker processes are daemonic and run under nannies; pynisher starts
its children without `multiprocessing`, so limits work there. Send a
`Pynisher` object (or a decorated function) to the workers: the limits are
enforced on the worker's machine, and the result, the exception or the
`Outcome` comes back to the client. The same code runs against a remote
scheduler: replace the LocalCluster with its address.

Run it with:  python3 examples/dask_cluster.py   (needs: pip install distributed)
"""

from __future__ import annotations

import logging
import time

from distributed import Client, LocalCluster

from pynisher import Pynisher, WallTimeoutException


def train(seconds: float) -> float:
    time.sleep(seconds)
    return seconds * 10


def main() -> None:
    cluster = LocalCluster(
        n_workers=2,  # worker processes, each under a nanny
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.CRITICAL,  # workers log every failed task
    )
    with cluster, Client(cluster) as client:
        limited = Pynisher(train, wall_time=1.0, memory="1GB")

        # As values: the exception of a call comes back to the client.
        future = client.submit(limited, 5.0, pure=False)
        try:
            future.result()
        except WallTimeoutException as e:
            print("remote call stopped:", e)

        # As data: run() returns an Outcome, which never raises.
        futures = client.map(limited.run, [0.1, 0.2, 3.0], pure=False)
        for seconds, outcome in zip([0.1, 0.2, 3.0], client.gather(futures)):
            print(
                f"train({seconds}) -> {outcome.status.value:<9} value={outcome.value} "
                f"wall={outcome.wall_time:.2f}s"
            )


if __name__ == "__main__":
    main()
