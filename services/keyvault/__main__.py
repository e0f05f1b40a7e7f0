"""Process entry of the keyvault service: ``python -m services.keyvault``."""

from services.keyvault.app import DESCRIPTION, create_app
from services.keyvault.settings import KeyvaultSettings
from shared.runner import service_command

main = service_command(name="keyvault", summary=DESCRIPTION, settings_cls=KeyvaultSettings, create_app=create_app)

if __name__ == "__main__":
    main()
