"""llamadock orchestrator: the only component with the Docker socket. It turns model
specs into llama-server containers and tells the gateway what is running where."""

__version__ = "0.1.0"
