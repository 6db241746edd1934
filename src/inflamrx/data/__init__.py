"""The cohort data contract: schema, reading, validation, scales, outcomes, the generator."""
