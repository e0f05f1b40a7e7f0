"""Process entry of the intake service: ``python -m services.intake``."""

from services.intake.app import DESCRIPTION, create_app
from services.intake.settings import IntakeSettings
from shared.runner import service_command

main = service_command(name="intake", summary=DESCRIPTION, settings_cls=IntakeSettings, create_app=create_app)

if __name__ == "__main__":
    main()
