# DigitalOcean for Lifeboat's `type: terraform` provider: one droplet per host of the target in a VPC, a
# cloud firewall (SSH from admin_cidrs, HTTP/HTTPS from anywhere, everything inside the VPC), a volume per
# db host, and the lifeboat_hosts output Lifeboat reaches them by. The droplets' SSH host keys are made
# here and pinned (host_keys). Media lives on the storage host, or in Spaces with `object_store: module`
# (the lifeboat_object_store output); DNS at DigitalOcean through the lifeboat_dns output. Not exercised
# against DigitalOcean from Lifeboat's CI (its provider cannot be downloaded there): checked with `terraform fmt -check` and for the contract's variables and outputs.
terraform {
  required_version = ">= 1.5"
  required_providers {
    digitalocean = {
      source  = "digitalocean/digitalocean"
      version = ">= 2.34, < 3.0"
    }
    tls = {
      source  = "hashicorp/tls"
      version = ">= 4.0, < 5.0"
    }
  }
}

variable "lifeboat_name" {
  type        = string
  description = "prefix for everything this module names (Lifeboat passes <stack>-<target>)"
}

variable "lifeboat_ssh_public_key" {
  type        = string
  description = "the key Lifeboat logs in with (authorised for root on every droplet)"
}

variable "hosts" {
  type        = string
  description = "comma-separated host names, as under hosts: in the stack file"
}

variable "db_hosts" {
  type        = string
  default     = ""
  description = "comma-separated names of the hosts that get a data volume"
}

variable "size" {
  type    = string
  default = "s-2vcpu-4gb"
}

variable "region" {
  type    = string
  default = "fra1"
}

variable "image" {
  type    = string
  default = "debian-12-x64"
}

variable "volume_gb" {
  type    = string
  default = "20"
}

variable "admin_cidrs" {
  type        = string
  default     = "0.0.0.0/0"
  description = "comma-separated CIDRs allowed to reach SSH"
}

locals {
  hosts    = toset(compact(split(",", var.hosts)))
  db_hosts = toset(compact(split(",", var.db_hosts)))
  admins   = compact(split(",", var.admin_cidrs))
}

resource "tls_private_key" "host" {
  for_each  = local.hosts
  algorithm = "ED25519"
}

resource "digitalocean_ssh_key" "lifeboat" {
  name       = var.lifeboat_name
  public_key = var.lifeboat_ssh_public_key
}

resource "digitalocean_vpc" "private" {
  name     = var.lifeboat_name
  region   = var.region
  ip_range = "10.43.0.0/16"
}

resource "digitalocean_droplet" "host" {
  for_each = local.hosts
  name     = "${var.lifeboat_name}-${each.key}"
  size     = var.size
  image    = var.image
  region   = var.region
  vpc_uuid = digitalocean_vpc.private.id
  ssh_keys = [digitalocean_ssh_key.lifeboat.fingerprint]
  user_data = yamlencode({
    ssh_deletekeys  = true
    ssh_genkeytypes = []
    ssh_keys = {
      ed25519_private = tls_private_key.host[each.key].private_key_openssh
      ed25519_public  = tls_private_key.host[each.key].public_key_openssh
    }
  })
}

resource "digitalocean_volume" "data" {
  for_each                = local.db_hosts
  name                    = "${var.lifeboat_name}-${each.key}-data"
  region                  = var.region
  size                    = tonumber(var.volume_gb)
  initial_filesystem_type = "ext4"
}

resource "digitalocean_volume_attachment" "data" {
  for_each   = local.db_hosts
  droplet_id = digitalocean_droplet.host[each.key].id
  volume_id  = digitalocean_volume.data[each.key].id
}

resource "digitalocean_firewall" "lifeboat" {
  name        = var.lifeboat_name
  droplet_ids = [for d in digitalocean_droplet.host : d.id]
  inbound_rule {
    protocol         = "tcp"
    port_range       = "22"
    source_addresses = local.admins
  }
  inbound_rule {
    protocol         = "tcp"
    port_range       = "80"
    source_addresses = ["0.0.0.0/0", "::/0"]
  }
  inbound_rule {
    protocol         = "tcp"
    port_range       = "443"
    source_addresses = ["0.0.0.0/0", "::/0"]
  }
  inbound_rule {
    protocol         = "tcp"
    port_range       = "1-65535"
    source_addresses = [digitalocean_vpc.private.ip_range]
  }
  outbound_rule {
    protocol              = "tcp"
    port_range            = "1-65535"
    destination_addresses = ["0.0.0.0/0", "::/0"]
  }
  outbound_rule {
    protocol              = "udp"
    port_range            = "1-65535"
    destination_addresses = ["0.0.0.0/0", "::/0"]
  }
}

output "lifeboat_hosts" {
  value = {
    for name, droplet in digitalocean_droplet.host : name => {
      address         = droplet.ipv4_address
      user            = "root"
      private_address = droplet.ipv4_address_private
      host_keys       = [trimspace(tls_private_key.host[name].public_key_openssh)]
    }
  }
}

# Used with `object_store: module`: the stack's buckets in Spaces (S3-compatible) in the droplets' region.
# Spaces access keys are read from the two environment variables named here, never from Terraform state.
variable "object_store_key_env" {
  type    = string
  default = "SPACES_ACCESS_KEY_ID"
}

variable "object_store_secret_env" {
  type    = string
  default = "SPACES_SECRET_ACCESS_KEY"
}

output "lifeboat_object_store" {
  value = {
    type           = "s3"
    endpoint_url   = "https://${var.region}.digitaloceanspaces.com"
    region         = var.region
    access_key_env = var.object_store_key_env
    secret_key_env = var.object_store_secret_env
  }
}

# DigitalOcean DNS, for a stack that names this target under `dns: provider:`: Lifeboat keeps the stack's
# records in the domain (the stack's `dns: zone:`) through the DigitalOcean API, with the token in the
# environment variable named here (the one this module's provider reads too). The domain itself is not
# made here: it outlives any one target, and destroying this target must not take its DNS down
# (`doctl compute domain create`, once, and the registrar's NS records pointing at DigitalOcean).
variable "dns_token_env" {
  type    = string
  default = "DIGITALOCEAN_TOKEN"
}

output "lifeboat_dns" {
  value = {
    type      = "digitalocean-dns"
    token_env = var.dns_token_env
  }
}
