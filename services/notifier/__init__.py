"""lethe notifier: signed webhooks to integrators and the email to the person."""
