from services.strategy.main import create_app
from services.strategy.settings import StrategySettings
from shared.server import run_service

run_service(StrategySettings, create_app)
