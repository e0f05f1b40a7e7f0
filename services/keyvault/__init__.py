"""lethe keyvault: envelope encryption and crypto-shredding."""
