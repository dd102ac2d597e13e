from services.executor.main import create_app
from services.executor.settings import ExecutorSettings
from shared.server import run_service

run_service(ExecutorSettings, create_app)
