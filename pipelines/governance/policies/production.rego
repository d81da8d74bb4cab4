# Shipped rules for promotions. Each rule selects the environments it is about itself.
# The input document is described in docs/policy.md.
package promote.production

is_prod if input.environment == "prod"

workload_kinds := {"Deployment", "StatefulSet", "DaemonSet"}

# No Service of type LoadBalancer in prod: traffic enters through the shared ingress.
deny contains msg if {
	is_prod
	some m in input.manifests
	m.kind == "Service"
	m.object.spec.type == "LoadBalancer"
	msg := sprintf("%s: Service %s is of type LoadBalancer, which is not allowed in prod (use the shared ingress)", [m.file, m.name])
}

# No `latest` tags anywhere: a promotion must name what it ships.
deny contains msg if {
	some m in input.manifests
	m.kind in workload_kinds
	some c in m.object.spec.template.spec.containers
	endswith(c.image, ":latest")
	msg := sprintf("%s: container %s of %s %s uses the `latest` tag", [m.file, c.name, m.kind, m.name])
}

# No semver downgrade through a promotion: use `promote rollback`, which leaves a record.
deny contains msg if {
	old := input.change.oldValue
	new := input.change.newValue
	semver.is_valid(old)
	semver.is_valid(new)
	semver.compare(new, old) < 0
	msg := sprintf("%s: %s -> %s is a downgrade; use `promote rollback` instead", [input.change.file, old, new])
}

# Nothing reaches prod after failed evidence.
deny contains msg if {
	is_prod
	some name, s in input.stages
	s.kind in {"metrics", "logs"}
	s.state == "failed"
	msg := sprintf("stage %s failed: nothing goes to prod after failed evidence", [name])
}

# Containers without limits are allowed, but said.
warn contains msg if {
	is_prod
	some m in input.manifests
	m.kind in workload_kinds
	some c in m.object.spec.template.spec.containers
	not c.resources.limits
	msg := sprintf("%s: container %s of %s %s has no resource limits", [m.file, c.name, m.kind, m.name])
}
