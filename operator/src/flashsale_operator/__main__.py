"""`python -m flashsale_operator`: kopf with the FlashSale handlers, the /healthz endpoint for the
probes, and kopf peering so that only one of several replicas acts (the others wait paused)."""

from __future__ import annotations

import random

import kopf

from flashsale_operator import config, logs
from flashsale_operator import handlers as handlers  # registers the handlers with kopf

# Random peering priorities up to 2^31: two replicas drawing the same one (which would pause both
# until one restarts) is a one-in-two-billion event.
MAX_PRIORITY = 2**31 - 1


def main() -> None:
    settings = config.Settings()
    logs.setup(settings)
    op = settings.operator
    standalone = op.standalone
    kopf.run(
        clusterwide=not op.namespace,
        namespaces=[op.namespace] if op.namespace else (),
        standalone=standalone,
        peering_name=None if standalone else op.peering_name,
        priority=op.priority if op.priority is not None else random.randint(1, MAX_PRIORITY),
        liveness_endpoint=f"http://{op.health_host}:{op.health_port}/healthz",
        memo=kopf.Memo(config=settings),
    )


if __name__ == "__main__":
    main()
