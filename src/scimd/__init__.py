"""scimd: a SCIM 2.0 service provider and provisioning engine."""
