from services.exchange_sim.main import create_app
from services.exchange_sim.settings import SimSettings
from shared.server import run_service

run_service(SimSettings, create_app)
