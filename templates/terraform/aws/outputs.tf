output "hosts" {
  description = "per instance: id, public and private address"
  value = { for k, i in aws_instance.host : k => {
    id         = i.id
    public_ip  = i.public_ip
    private_ip = i.private_ip
  } }
}

output "postgres" {
  value = var.postgres == null ? null : {
    address    = aws_db_instance.postgres[0].address
    port       = aws_db_instance.postgres[0].port
    identifier = aws_db_instance.postgres[0].identifier
  }
}

output "buckets" {
  value = { for k, b in aws_s3_bucket.media : k => b.bucket }
}

output "zone_id" {
  value = var.dns_zone == null ? null : aws_route53_zone.main[0].zone_id
}

output "name_servers" {
  value = var.dns_zone == null ? [] : aws_route53_zone.main[0].name_servers
}
