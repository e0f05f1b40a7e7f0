"""Process entry of the notifier service: ``python -m services.notifier``."""

from services.notifier.app import DESCRIPTION, create_app
from services.notifier.settings import NotifierSettings
from shared.runner import service_command

main = service_command(name="notifier", summary=DESCRIPTION, settings_cls=NotifierSettings, create_app=create_app)

if __name__ == "__main__":
    main()
