"""llamadock's node agent: on every node of a swarm (a global service of the app image), it reports
the node's GPUs (NVML), the GGUF files in its models directory and its host kind on ``GET /facts``
(contract/nodes.py), for the orchestrator to fold into the pools."""
