"""Process entry of the purger service: ``python -m services.purger``."""

from services.purger.app import DESCRIPTION, create_app
from services.purger.settings import PurgerSettings
from shared.runner import service_command

main = service_command(name="purger", summary=DESCRIPTION, settings_cls=PurgerSettings, create_app=create_app)

if __name__ == "__main__":
    main()
