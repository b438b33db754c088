"""Tasks score methods on zoos: reconstruction, property prediction, INR classification, transfer."""
