"""The Helm chart under deploy/helm/trader-stack, rendered and validated offline."""
