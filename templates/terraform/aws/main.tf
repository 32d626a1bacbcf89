# The AWS side of a Lifeboat stack: network, instances for the web/worker/db roles, RDS PostgreSQL, the
# media buckets and (when DNS lives here) a Route53 zone. Services are deployed onto the instances over
# SSH by Lifeboat, not by Terraform. Secret values never pass through Terraform (its state is plain
# JSON) except the RDS master password, which AWS needs at creation.

locals {
  tags = merge(var.tags, { "lifeboat:stack" = var.name, "managed-by" = "lifeboat" })
}

resource "aws_vpc" "main" {
  cidr_block           = var.vpc_cidr
  enable_dns_hostnames = true
  enable_dns_support   = true
  tags                 = merge(local.tags, { Name = var.name })
}

resource "aws_internet_gateway" "main" {
  vpc_id = aws_vpc.main.id
  tags   = local.tags
}

resource "aws_subnet" "public" {
  count                   = length(var.availability_zones)
  vpc_id                  = aws_vpc.main.id
  availability_zone       = var.availability_zones[count.index]
  cidr_block              = cidrsubnet(var.vpc_cidr, 8, count.index)
  map_public_ip_on_launch = true
  tags                    = merge(local.tags, { Name = "${var.name}-public-${count.index}" })
}

resource "aws_subnet" "private" {
  count             = var.postgres == null ? 0 : length(var.availability_zones)
  vpc_id            = aws_vpc.main.id
  availability_zone = var.availability_zones[count.index]
  cidr_block        = cidrsubnet(var.vpc_cidr, 8, 100 + count.index)
  tags              = merge(local.tags, { Name = "${var.name}-private-${count.index}" })
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.main.id
  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.main.id
  }
  tags = local.tags
}

resource "aws_route_table_association" "public" {
  count          = length(aws_subnet.public)
  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

resource "aws_security_group" "hosts" {
  name        = "${var.name}-hosts"
  description = "Lifeboat ${var.name}: instances"
  vpc_id      = aws_vpc.main.id
  tags        = local.tags

  ingress {
    description = "SSH (Lifeboat and operators)"
    from_port   = 22
    to_port     = 22
    protocol    = "tcp"
    cidr_blocks = var.admin_cidrs
  }

  dynamic "ingress" {
    for_each = var.public_ports
    content {
      description = "public"
      from_port   = ingress.value
      to_port     = ingress.value
      protocol    = "tcp"
      cidr_blocks = ["0.0.0.0/0"]
    }
  }

  dynamic "ingress" {
    for_each = var.app_ports
    content {
      description = "between the stack instances"
      from_port   = ingress.value
      to_port     = ingress.value
      protocol    = "tcp"
      self        = true
    }
  }

  egress {
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_key_pair" "lifeboat" {
  key_name   = "${var.name}-lifeboat"
  public_key = var.ssh_public_key
  tags       = local.tags
}

# The apps on the instances reach the media buckets with the instance's role (no keys on disk).
resource "aws_iam_role" "host" {
  name = "${var.name}-host"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Principal = { Service = "ec2.amazonaws.com" }, Action = "sts:AssumeRole" }]
  })
  tags = local.tags
}

resource "aws_iam_role_policy" "media" {
  count = length(var.buckets) == 0 ? 0 : 1
  name  = "${var.name}-media"
  role  = aws_iam_role.host.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      { Effect = "Allow", Action = ["s3:ListBucket"], Resource = [for b in aws_s3_bucket.media : b.arn] },
      { Effect = "Allow", Action = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
      Resource = [for b in aws_s3_bucket.media : "${b.arn}/*"] },
    ]
  })
}

resource "aws_iam_instance_profile" "host" {
  name = "${var.name}-host"
  role = aws_iam_role.host.name
  tags = local.tags
}

resource "aws_instance" "host" {
  for_each               = var.instances
  ami                    = each.value.ami
  instance_type          = each.value.type
  subnet_id              = aws_subnet.public[index(sort(keys(var.instances)), each.key) % length(aws_subnet.public)].id
  vpc_security_group_ids = [aws_security_group.hosts.id]
  key_name               = aws_key_pair.lifeboat.key_name
  iam_instance_profile   = aws_iam_instance_profile.host.name
  user_data              = lookup(var.user_data, each.key, null)
  metadata_options {
    http_tokens = "required"
  }
  root_block_device {
    volume_size = each.value.disk_gb
    volume_type = "gp3"
    encrypted   = true
  }
  tags = merge(local.tags, { Name = "${var.name}-${each.key}", "lifeboat:host" = each.key,
  "lifeboat:roles" = join(",", each.value.roles) })
}

# ---------------------------------------------------------------- PostgreSQL (private)

resource "aws_security_group" "db" {
  count       = var.postgres == null ? 0 : 1
  name        = "${var.name}-db"
  description = "Lifeboat ${var.name}: PostgreSQL from the instances"
  vpc_id      = aws_vpc.main.id
  tags        = local.tags

  ingress {
    from_port       = 5432
    to_port         = 5432
    protocol        = "tcp"
    security_groups = [aws_security_group.hosts.id]
  }
}

resource "aws_db_subnet_group" "db" {
  count      = var.postgres == null ? 0 : 1
  name       = "${var.name}-db"
  subnet_ids = aws_subnet.private[*].id
  tags       = local.tags
}

resource "aws_db_instance" "postgres" {
  count                     = var.postgres == null ? 0 : 1
  identifier                = "${var.name}-pg"
  engine                    = "postgres"
  engine_version            = var.postgres.version
  instance_class            = var.postgres.instance_class
  allocated_storage         = var.postgres.storage_gb
  db_name                   = var.postgres.database
  username                  = var.postgres.username
  password                  = var.postgres_password
  db_subnet_group_name      = aws_db_subnet_group.db[0].name
  vpc_security_group_ids    = [aws_security_group.db[0].id]
  publicly_accessible       = false
  storage_encrypted         = true
  backup_retention_period   = 7
  skip_final_snapshot       = false
  final_snapshot_identifier = "${var.name}-pg-final"
  deletion_protection       = false
  tags                      = local.tags
}

# ---------------------------------------------------------------- media buckets (versioned, encrypted; private unless public: true)

resource "aws_s3_bucket" "media" {
  for_each = var.buckets
  # S3 names are global: a prefix plus a unique suffix Terraform picks (outputs give the full names)
  bucket_prefix = substr("${var.name}-${each.key}-", 0, 37)
  force_destroy = true
  tags          = local.tags
}

# ACLs never make anything public; a bucket the stack marks public: true is readable by anyone through the
# policy below (what apps that hand out their media's S3 URLs need: Takahē, Mastodon, Pixelfed...)
resource "aws_s3_bucket_public_access_block" "media" {
  for_each                = var.buckets
  bucket                  = aws_s3_bucket.media[each.key].id
  block_public_acls       = true
  block_public_policy     = !each.value.public
  ignore_public_acls      = true
  restrict_public_buckets = !each.value.public
}

resource "aws_s3_bucket_policy" "public_read" {
  for_each = { for k, b in var.buckets : k => b if b.public }
  bucket   = aws_s3_bucket.media[each.key].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{ Sid = "PublicRead", Effect = "Allow", Principal = "*", Action = ["s3:GetObject"],
    Resource = ["${aws_s3_bucket.media[each.key].arn}/*"] }]
  })
  depends_on = [aws_s3_bucket_public_access_block.media]
}

resource "aws_s3_bucket_versioning" "media" {
  for_each = var.buckets
  bucket   = aws_s3_bucket.media[each.key].id
  versioning_configuration {
    status = "Enabled" # always: an overwritten or deleted media file can be brought back
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "media" {
  for_each = var.buckets
  bucket   = aws_s3_bucket.media[each.key].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

# ---------------------------------------------------------------- DNS

resource "aws_route53_zone" "main" {
  count         = var.dns_zone == null ? 0 : 1
  name          = var.dns_zone
  force_destroy = true
  tags          = local.tags
}
