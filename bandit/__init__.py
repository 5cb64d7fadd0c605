"""Action catalog, business rules, feature encoding, the VW learner and exploration."""
