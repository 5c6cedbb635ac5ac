package scope

import (
	"cmp"
	"slices"
)

// TenantRole is the role a tenant's credentials are minted from.
type TenantRole struct {
	Org     string
	RoleARN string
}

// TenantRoles lists the role of every tenant that has one, ordered by
// org. Sessions of these roles should only exist through the dispenser.
func (r *Rules) TenantRoles() []TenantRole {
	out := make([]TenantRole, 0, len(r.tenants))
	for org, t := range r.tenants {
		if t.RoleARN != "" {
			out = append(out, TenantRole{Org: org, RoleARN: t.RoleARN})
		}
	}
	slices.SortFunc(out, func(a, b TenantRole) int { return cmp.Compare(a.Org, b.Org) })
	return out
}
