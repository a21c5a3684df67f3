"""Serving a found model: `prumux-search serve` on Ray Serve, multiplexing one tenant's inputs per group.

    HTTP -> Ray Serve proxy -> Gateway (keys, limits, input checks) -> Classifier replicas
            (batcher: up to max-batch instances, or max-wait-ms and the model free; one pass per tenant)

Nothing else in the project imports this package; the CLI's command table names `cli.commands.serve:serve`.
"""
