# Hetzner Cloud for Lifeboat's `type: terraform` provider: one server per host of the target, a firewall
# (SSH from admin_cidrs, HTTP/HTTPS from anywhere, everything between the servers on the private
# network), a private network, a volume per db host, the lifeboat_hosts output Lifeboat reaches them
# by, the lifeboat_object_store output (Hetzner Object Storage, for `object_store: module`) and the
# lifeboat_dns output (Hetzner DNS). The servers' SSH host keys are made here and pinned (host_keys), so
# the first connection is already verified. Not exercised against Hetzner from Lifeboat's CI (its provider cannot be downloaded
# there): checked with `terraform fmt -check` and for the contract's variables and outputs.
terraform {
  required_version = ">= 1.5"
  required_providers {
    hcloud = {
      source  = "hetznercloud/hcloud"
      version = ">= 1.45, < 2.0"
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
  description = "the key Lifeboat logs in with (authorised for root on every server)"
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

variable "server_type" {
  type    = string
  default = "cx22"
}

variable "location" {
  type    = string
  default = "fsn1"
}

variable "image" {
  type    = string
  default = "debian-12"
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

resource "hcloud_ssh_key" "lifeboat" {
  name       = var.lifeboat_name
  public_key = var.lifeboat_ssh_public_key
}

resource "hcloud_network" "private" {
  name     = var.lifeboat_name
  ip_range = "10.42.0.0/16"
}

resource "hcloud_network_subnet" "private" {
  network_id   = hcloud_network.private.id
  type         = "cloud"
  network_zone = "eu-central"
  ip_range     = "10.42.1.0/24"
}

resource "hcloud_firewall" "lifeboat" {
  name = var.lifeboat_name
  rule {
    direction  = "in"
    protocol   = "tcp"
    port       = "22"
    source_ips = local.admins
  }
  rule {
    direction  = "in"
    protocol   = "tcp"
    port       = "80"
    source_ips = ["0.0.0.0/0", "::/0"]
  }
  rule {
    direction  = "in"
    protocol   = "tcp"
    port       = "443"
    source_ips = ["0.0.0.0/0", "::/0"]
  }
}

resource "hcloud_server" "host" {
  for_each     = local.hosts
  name         = "${var.lifeboat_name}-${each.key}"
  server_type  = var.server_type
  image        = var.image
  location     = var.location
  ssh_keys     = [hcloud_ssh_key.lifeboat.id]
  firewall_ids = [hcloud_firewall.lifeboat.id]
  user_data = yamlencode({
    ssh_deletekeys  = true
    ssh_genkeytypes = []
    ssh_keys = {
      ed25519_private = tls_private_key.host[each.key].private_key_openssh
      ed25519_public  = tls_private_key.host[each.key].public_key_openssh
    }
  })
  network {
    network_id = hcloud_network.private.id
  }
  depends_on = [hcloud_network_subnet.private]
}

resource "hcloud_volume" "data" {
  for_each  = local.db_hosts
  name      = "${var.lifeboat_name}-${each.key}-data"
  size      = tonumber(var.volume_gb)
  server_id = hcloud_server.host[each.key].id
  automount = true
  format    = "ext4"
}

output "lifeboat_hosts" {
  value = {
    for name, server in hcloud_server.host : name => {
      address         = server.ipv4_address
      user            = "root"
      private_address = one(server.network[*].ip)
      host_keys       = [trimspace(tls_private_key.host[name].public_key_openssh)]
    }
  }
}

# Used with `object_store: module`: the stack's buckets in Hetzner Object Storage (S3-compatible) in the
# servers' location. Its S3 credentials are made in the Hetzner Console (the hcloud provider cannot make
# them); Lifeboat reads them from the two environment variables named here, never from Terraform.
variable "object_store_key_env" {
  type    = string
  default = "HETZNER_S3_ACCESS_KEY"
}

variable "object_store_secret_env" {
  type    = string
  default = "HETZNER_S3_SECRET_KEY"
}

output "lifeboat_object_store" {
  value = {
    type           = "s3"
    endpoint_url   = "https://${var.location}.your-objectstorage.com"
    region         = var.location
    access_key_env = var.object_store_key_env
    secret_key_env = var.object_store_secret_env
  }
}

# Hetzner DNS (zones in the Hetzner Cloud API), for a stack that names this target under `dns: provider:`:
# Lifeboat keeps the stack's records in the zone (the stack's `dns: zone:`, a primary zone) through the
# API, with the token in the environment variable named here (the one this module's provider reads too).
# The zone itself is not made here: it outlives any one target, and destroying this target must not take
# its DNS down (`hcloud zone create --name example.com --mode primary`, once, and the registrar's NS
# records pointing at Hetzner).
variable "dns_token_env" {
  type    = string
  default = "HCLOUD_TOKEN"
}

output "lifeboat_dns" {
  value = {
    type      = "hetzner-dns"
    token_env = var.dns_token_env
  }
}
