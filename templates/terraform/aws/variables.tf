# Inputs Lifeboat writes to terraform.tfvars.json (and, for the sensitive ones, to a var file that exists
# only while a command runs). See providers/aws.py for how each is derived from the stack file.

variable "name" {
  type        = string
  description = "prefix of every resource name: <stack>-<target>"
}

variable "availability_zones" {
  type        = list(string)
  description = "two zones of the region (RDS wants a subnet group spanning two)"
}

variable "vpc_cidr" {
  type    = string
  default = "10.42.0.0/16"
}

variable "admin_cidrs" {
  type        = list(string)
  description = "who may reach the instances over SSH"
}

variable "public_ports" {
  type        = list(number)
  description = "ports open to everyone on the web instances (the TLS proxy)"
}

variable "app_ports" {
  type        = list(number)
  description = "ports the services listen on, open between the stack's own instances"
}

variable "instances" {
  type = map(object({
    type    = string
    ami     = string
    disk_gb = number
    roles   = list(string)
  }))
}

variable "ssh_public_key" {
  type        = string
  description = "the key Lifeboat logs in with (its private half stays in Lifeboat's state directory)"
}

variable "user_data" {
  type        = map(string)
  description = "cloud-init per instance: the login key and the pinned SSH host key"
  sensitive   = true
  default     = {}
}

variable "postgres" {
  type = object({
    version        = string
    instance_class = string
    storage_gb     = number
    database       = string
    username       = string
  })
  default = null
}

variable "postgres_password" {
  type      = string
  sensitive = true
  default   = null
}

variable "buckets" {
  type        = map(object({ public = bool }))
  default     = {}
  description = "media buckets; versioned and encrypted; public = anyone may read their objects (a bucket policy), else private"
}

variable "dns_zone" {
  type        = string
  default     = null
  description = "a Route53 hosted zone to create when the stack's DNS lives on this target"
}

variable "tags" {
  type    = map(string)
  default = {}
}
