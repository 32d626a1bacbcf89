# A provider module for the tests that needs no provider download (terraform_data is built in): it
# "makes" one resource per host and reports, through the Lifeboat contract, how to reach each one. The
# hosts themselves are real OpenSSH servers the test harness started on loopback.
variable "lifeboat_name" {
  type = string
}

variable "lifeboat_ssh_public_key" {
  type = string
}

variable "user" {
  type = string
}

variable "web1" {
  type = string # address:port
}

variable "web2" {
  type = string
}

variable "db1" {
  type = string
}

variable "object_store" {
  type    = string # JSON of a lifeboat_object_store value, or "" for media on the storage host
  default = ""
}

locals {
  hosts = { web1 = var.web1, web2 = var.web2, db1 = var.db1 }
}

resource "terraform_data" "host" {
  for_each = local.hosts
  input = {
    name       = "${var.lifeboat_name}-${each.key}"
    address    = split(":", each.value)[0]
    port       = tonumber(split(":", each.value)[1])
    authorized = var.lifeboat_ssh_public_key
  }
}

output "lifeboat_hosts" {
  value = {
    for name, host in terraform_data.host : name => {
      address = host.output.address
      port    = host.output.port
      user    = var.user
    }
  }
}

output "lifeboat_object_store" {
  value = var.object_store == "" ? null : jsondecode(var.object_store)
}

variable "dns" {
  type    = string # JSON of a lifeboat_dns value, or "" for no DNS service
  default = ""
}

output "lifeboat_dns" {
  value = var.dns == "" ? null : jsondecode(var.dns)
}
