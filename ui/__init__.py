"""The interfaces over the application core (app/): the command line (cli.py, train_command.py), the
agents' page (web.py, Gradio), the REST API (api.py, FastAPI) and the server that runs both
(server.py). The only package that imports a web framework or reads the environment (settings.py).

Entry point: `agent-helper` = `ui.cli:main`.
"""
