"""Parts the providers are composed of (the host machinery, Terraform-made hosts); none of them is a
provider type of its own."""
