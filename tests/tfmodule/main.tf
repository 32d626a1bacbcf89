# A module that needs no provider download: terraform_data works offline.
variable "greeting" {
  type = string
}

variable "token" {
  type      = string
  sensitive = true
  default   = "none"
}

resource "terraform_data" "note" {
  input = var.greeting
}

resource "terraform_data" "replaced" {
  triggers_replace = [var.greeting]
}

output "note" {
  value = terraform_data.note.output
}

output "token_length" {
  value = nonsensitive(length(var.token))
}
