"""What users import: ``from anypu import sdk``.

::

    y = sdk.run(model, x)                      # embedded: nothing to start
    sdk.connect("10.0.0.5:7070", token="T")    # or ANYPU_ADDRESS / ANYPU_TOKEN
    y = sdk.run(model, x)                      # same call, placed on the network
    fut = sdk.submit(model, x); fut.result()   # asynchronous form

Nobody names a device: the scheduler chooses where each job runs.
"""

from anypu.sdk._api import connect, disconnect, jobs, nodes, run, submit
from anypu.sdk._client import Client, JobHandle, RunOptions

__all__ = [
    "Client",
    "JobHandle",
    "RunOptions",
    "connect",
    "disconnect",
    "jobs",
    "nodes",
    "run",
    "submit",
]
