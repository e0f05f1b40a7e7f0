"""Process entry of the audit service: ``python -m services.audit``."""

from services.audit.app import DESCRIPTION, create_app
from services.audit.settings import AuditSettings
from shared.runner import service_command

main = service_command(name="audit", summary=DESCRIPTION, settings_cls=AuditSettings, create_app=create_app)

if __name__ == "__main__":
    main()
