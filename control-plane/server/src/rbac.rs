//! Roles, permissions and the one authorization check every handler makes.
//!
//! Tenancy is MSP → customer tenant → site → device. An admin belongs to an MSP (MSP roles)
//! or to one customer tenant of an MSP (customer roles). [`authorize`] decides, for a
//! principal, a [`Permission`] and a [`Target`]:
//!
//! 1. the target must lie in the principal's subtree, otherwise `404 not_found` (the answer
//!    for a tenant that does not exist, so other tenants' ids are not confirmed);
//! 2. the principal's role must grant the permission, otherwise `403 forbidden_role`;
//! 3. an API token must carry the permission in its scopes, otherwise `403 token_scope`.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// An admin role, from most to least privileged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read-only customer role: tenant, devices, policy, audit, alerts, admin actions.
    CustomerAuditor,
    /// Manages one customer tenant: sites, claim codes, policy, its admins.
    CustomerAdmin,
    /// Operates every customer of the MSP, but creates no tenants and manages no admins.
    MspEngineer,
    /// Everything within the MSP: customers, admins, MFA resets.
    MspOwner,
}

impl Role {
    /// Every role, most privileged first.
    pub const ALL: [Role; 4] = [
        Role::MspOwner,
        Role::MspEngineer,
        Role::CustomerAdmin,
        Role::CustomerAuditor,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::MspOwner => "msp_owner",
            Role::MspEngineer => "msp_engineer",
            Role::CustomerAdmin => "customer_admin",
            Role::CustomerAuditor => "customer_auditor",
        }
    }

    /// True for roles that act on a whole MSP.
    pub fn is_msp(self) -> bool {
        matches!(self, Role::MspOwner | Role::MspEngineer)
    }

    /// What the role may do.
    pub fn permissions(self) -> BTreeSet<Permission> {
        use Permission::*;
        let list: &[Permission] = match self {
            Role::MspOwner => &Permission::ALL,
            Role::MspEngineer => &[
                TenantsRead,
                SitesWrite,
                ClaimCodesCreate,
                DevicesRead,
                PolicyRead,
                PolicyWrite,
                AuditRead,
                AuditSign,
                IncidentsManage,
                AlertsRead,
                AdminsRead,
                AdminActionsRead,
                TokensCreate,
            ],
            Role::CustomerAdmin => &[
                TenantsRead,
                SitesWrite,
                ClaimCodesCreate,
                DevicesRead,
                PolicyRead,
                PolicyWrite,
                AuditRead,
                AuditSign,
                IncidentsManage,
                AlertsRead,
                AdminsRead,
                AdminsManage,
                AdminActionsRead,
                TokensCreate,
            ],
            Role::CustomerAuditor => &[
                TenantsRead,
                DevicesRead,
                PolicyRead,
                AuditRead,
                AlertsRead,
                AdminActionsRead,
            ],
        };
        list.iter().copied().collect()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ApiError;

    fn from_str(s: &str) -> Result<Role, ApiError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "role_invalid",
                    "role must be msp_owner, msp_engineer, customer_admin or customer_auditor",
                )
            })
    }
}

/// Something an admin may be allowed to do. The snake_case names (`policy.write`, …) are also
/// the scopes of API tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// List tenants and sites.
    TenantsRead,
    /// Create customer tenants.
    TenantsCreate,
    /// Create sites.
    SitesWrite,
    /// Create claim codes.
    ClaimCodesCreate,
    /// List devices.
    DevicesRead,
    /// Read policy and its versions.
    PolicyRead,
    /// Publish policy.
    PolicyWrite,
    /// Query, verify, prove and export audit events; read checkpoints.
    AuditRead,
    /// Sign audit checkpoints.
    AuditSign,
    /// Read alerts.
    AlertsRead,
    /// List admins.
    AdminsRead,
    /// Create and disable admins, reset their MFA.
    AdminsManage,
    /// Read the admin-action trail.
    AdminActionsRead,
    /// Create API tokens.
    TokensCreate,
    /// Open, update and close incidents (reading them is `AuditRead`).
    IncidentsManage,
}

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 15] = [
        Permission::TenantsRead,
        Permission::TenantsCreate,
        Permission::SitesWrite,
        Permission::ClaimCodesCreate,
        Permission::DevicesRead,
        Permission::PolicyRead,
        Permission::PolicyWrite,
        Permission::AuditRead,
        Permission::AuditSign,
        Permission::AlertsRead,
        Permission::AdminsRead,
        Permission::AdminsManage,
        Permission::AdminActionsRead,
        Permission::TokensCreate,
        Permission::IncidentsManage,
    ];

    /// The scope name.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::TenantsRead => "tenants.read",
            Permission::TenantsCreate => "tenants.create",
            Permission::SitesWrite => "sites.write",
            Permission::ClaimCodesCreate => "claim_codes.create",
            Permission::DevicesRead => "devices.read",
            Permission::PolicyRead => "policy.read",
            Permission::PolicyWrite => "policy.write",
            Permission::AuditRead => "audit.read",
            Permission::AuditSign => "audit.sign",
            Permission::AlertsRead => "alerts.read",
            Permission::AdminsRead => "admins.read",
            Permission::AdminsManage => "admins.manage",
            Permission::AdminActionsRead => "admin_actions.read",
            Permission::TokensCreate => "tokens.create",
            Permission::IncidentsManage => "incidents.manage",
        }
    }

    /// Parses a scope name.
    pub fn parse(s: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// Where an admin sits in the hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// A whole MSP: itself and all of its customer tenants.
    Msp {
        /// MSP id.
        msp_id: String,
    },
    /// One customer tenant of an MSP.
    Customer {
        /// Owning MSP.
        msp_id: String,
        /// The tenant.
        tenant_id: String,
    },
}

impl Scope {
    /// The MSP.
    pub fn msp_id(&self) -> &str {
        match self {
            Scope::Msp { msp_id } | Scope::Customer { msp_id, .. } => msp_id,
        }
    }

    /// The tenant of a customer scope.
    pub fn tenant_id(&self) -> Option<&str> {
        match self {
            Scope::Msp { .. } => None,
            Scope::Customer { tenant_id, .. } => Some(tenant_id),
        }
    }
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Admin id.
    pub id: String,
    /// User name, recorded as the author of changes.
    pub username: String,
    /// Role.
    pub role: Role,
    /// Place in the hierarchy.
    pub scope: Scope,
    /// Scopes of the API token used, `None` for a session (the role's permissions).
    pub token_scopes: Option<BTreeSet<Permission>>,
}

impl Principal {
    /// What this credential may do: the role's permissions, narrowed by token scopes.
    pub fn effective_permissions(&self) -> BTreeSet<Permission> {
        let role = self.role.permissions();
        match &self.token_scopes {
            None => role,
            Some(scopes) => role.intersection(scopes).copied().collect(),
        }
    }
}

/// What an action applies to.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// Nothing tenant-specific (own tokens, lists filtered afterwards to the subtree).
    Own,
    /// A whole MSP (creating customers, MSP-level admins).
    Msp(&'a str),
    /// One customer tenant and the MSP that owns it.
    Tenant {
        /// Tenant id.
        tenant_id: &'a str,
        /// Owning MSP.
        msp_id: &'a str,
    },
}

/// Why [`authorize`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The target is outside the caller's subtree (answered as "not found").
    OutOfScope,
    /// The role does not grant the permission.
    Role,
    /// The API token's scopes do not include the permission.
    TokenScope,
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> ApiError {
        match d {
            Denied::OutOfScope => ApiError::not_found("no such tenant"),
            Denied::Role => ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_role",
                "your role does not allow this",
            ),
            Denied::TokenScope => ApiError::new(
                StatusCode::FORBIDDEN,
                "token_scope",
                "this API token's scopes do not allow this",
            ),
        }
    }
}

/// True when `target` lies in the subtree of `scope`.
pub fn in_scope(scope: &Scope, target: Target<'_>) -> bool {
    match (scope, target) {
        (_, Target::Own) => true,
        (Scope::Msp { msp_id }, Target::Msp(m)) => msp_id == m,
        (Scope::Customer { .. }, Target::Msp(_)) => false,
        (Scope::Msp { msp_id }, Target::Tenant { msp_id: m, .. }) => msp_id == m,
        (
            Scope::Customer { msp_id, tenant_id },
            Target::Tenant {
                tenant_id: t,
                msp_id: m,
            },
        ) => msp_id == m && tenant_id == t,
    }
}

/// The authorization decision: scope first, then role, then token scopes.
///
/// # Errors
/// [`Denied`] with the first check that failed.
pub fn authorize(
    principal: &Principal,
    permission: Permission,
    target: Target<'_>,
) -> Result<(), Denied> {
    if !in_scope(&principal.scope, target) {
        return Err(Denied::OutOfScope);
    }
    if !principal.role.permissions().contains(&permission) {
        return Err(Denied::Role);
    }
    if let Some(scopes) = &principal.token_scopes {
        if !scopes.contains(&permission) {
            return Err(Denied::TokenScope);
        }
    }
    Ok(())
}

/// Loads a tenant and authorizes `permission` on it: `404` when it does not exist or lies
/// outside the caller's subtree. Returns the tenant and its MSP.
///
/// # Errors
/// As [`authorize`], and store failures.
pub async fn authorize_tenant(
    state: &crate::state::SharedState,
    principal: &Principal,
    permission: Permission,
    tenant_id: &str,
) -> Result<(sase_model::fleet::Tenant, String), ApiError> {
    let (tenant, msp_id) = state
        .store
        .tenant_with_msp(tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such tenant"))?;
    authorize(
        principal,
        permission,
        Target::Tenant {
            tenant_id,
            msp_id: &msp_id,
        },
    )?;
    Ok((tenant, msp_id))
}

/// Authorizes `permission` on the tenant that owns a site (`404 no such site` outside scope).
///
/// # Errors
/// As [`authorize`], and store failures.
pub async fn authorize_site(
    state: &crate::state::SharedState,
    principal: &Principal,
    permission: Permission,
    site_id: &str,
) -> Result<sase_model::fleet::Site, ApiError> {
    let not_found = || ApiError::not_found("no such site");
    let site = state.store.site(site_id).await?.ok_or_else(not_found)?;
    match authorize_tenant(state, principal, permission, &site.tenant_id).await {
        Err(e) if e.status() == StatusCode::NOT_FOUND => Err(not_found()),
        Err(e) => Err(e),
        Ok(_) => Ok(site),
    }
}

/// Authorizes `permission` on the tenant that owns a device (`404 no such device` outside
/// scope). Returns the device's tenant id.
///
/// # Errors
/// As [`authorize`], and store failures.
pub async fn authorize_device(
    state: &crate::state::SharedState,
    principal: &Principal,
    permission: Permission,
    device_id: &str,
) -> Result<String, ApiError> {
    let not_found = || ApiError::not_found("no such device");
    let tenant_id = state
        .store
        .device_tenant(device_id)
        .await?
        .ok_or_else(not_found)?;
    match authorize_tenant(state, principal, permission, &tenant_id).await {
        Err(e) if e.status() == StatusCode::NOT_FOUND => Err(not_found()),
        Err(e) => Err(e),
        Ok(_) => Ok(tenant_id),
    }
}

/// Authorizes a permission that is not about one tenant (own tokens; lists that the handler
/// then filters to [`Principal::scope`]).
///
/// # Errors
/// As [`authorize`].
pub fn authorize_own(principal: &Principal, permission: Permission) -> Result<(), ApiError> {
    authorize(principal, permission, Target::Own).map_err(ApiError::from)
}

/// The tenants whose records a caller may read with `permission`, for list queries: the
/// whole subtree (an MSP's customers, a customer's own tenant), or only the tenant asked for —
/// none when that tenant is outside the subtree or does not exist (the query then matches
/// nothing, exactly as for an unknown tenant).
///
/// # Errors
/// As [`authorize`] (role and token scopes), and store failures.
pub async fn visible_tenants(
    state: &crate::state::SharedState,
    principal: &Principal,
    permission: Permission,
    tenant_id: Option<&str>,
) -> Result<Vec<String>, ApiError> {
    authorize_own(principal, permission)?;
    if let Some(t) = tenant_id {
        return Ok(
            match authorize_tenant(state, principal, permission, t).await {
                Ok(_) => vec![t.to_string()],
                Err(e) if e.status() == StatusCode::NOT_FOUND => Vec::new(),
                Err(e) => return Err(e),
            },
        );
    }
    Ok(match &principal.scope {
        Scope::Msp { msp_id } => state
            .store
            .tenants_of_msp(msp_id)
            .await?
            .into_iter()
            .map(|t| t.id)
            .collect(),
        Scope::Customer { tenant_id, .. } => vec![tenant_id.clone()],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role, scopes: Option<&[Permission]>) -> Principal {
        let scope = if role.is_msp() {
            Scope::Msp {
                msp_id: "m1".into(),
            }
        } else {
            Scope::Customer {
                msp_id: "m1".into(),
                tenant_id: "a".into(),
            }
        };
        Principal {
            id: "adm".into(),
            username: "u".into(),
            role,
            scope,
            token_scopes: scopes.map(|s| s.iter().copied().collect()),
        }
    }

    const OWN_TENANT: Target<'static> = Target::Tenant {
        tenant_id: "a",
        msp_id: "m1",
    };
    const SIBLING: Target<'static> = Target::Tenant {
        tenant_id: "b",
        msp_id: "m1",
    };
    const OTHER_MSP_TENANT: Target<'static> = Target::Tenant {
        tenant_id: "a",
        msp_id: "m2",
    };

    /// The role table, as documented in docs/MSP.md: `(permission, [owner, engineer,
    /// customer admin, auditor])`.
    const TABLE: [(Permission, [bool; 4]); 14] = [
        (Permission::TenantsRead, [true, true, true, true]),
        (Permission::TenantsCreate, [true, false, false, false]),
        (Permission::SitesWrite, [true, true, true, false]),
        (Permission::ClaimCodesCreate, [true, true, true, false]),
        (Permission::DevicesRead, [true, true, true, true]),
        (Permission::PolicyRead, [true, true, true, true]),
        (Permission::PolicyWrite, [true, true, true, false]),
        (Permission::AuditRead, [true, true, true, true]),
        (Permission::AuditSign, [true, true, true, false]),
        (Permission::AlertsRead, [true, true, true, true]),
        (Permission::AdminsRead, [true, true, true, false]),
        (Permission::AdminsManage, [true, false, true, false]),
        (Permission::AdminActionsRead, [true, true, true, true]),
        (Permission::TokensCreate, [true, true, true, false]),
    ];

    #[test]
    fn role_table_in_own_tenant() {
        for (permission, allowed) in TABLE {
            for (role, allowed) in Role::ALL.into_iter().zip(allowed) {
                let got = authorize(&principal(role, None), permission, OWN_TENANT);
                let want = if allowed { Ok(()) } else { Err(Denied::Role) };
                assert_eq!(got, want, "{role} {}", permission.as_str());
            }
        }
    }

    #[test]
    fn other_tenants_are_out_of_scope_for_every_permission_and_role() {
        for permission in Permission::ALL {
            for role in Role::ALL {
                let p = principal(role, None);
                assert_eq!(
                    authorize(&p, permission, OTHER_MSP_TENANT),
                    Err(Denied::OutOfScope),
                    "{role}"
                );
                assert_eq!(
                    authorize(&p, permission, Target::Msp("m2")),
                    Err(Denied::OutOfScope)
                );
                let sibling = authorize(&p, permission, SIBLING);
                if role.is_msp() {
                    assert_ne!(
                        sibling,
                        Err(Denied::OutOfScope),
                        "{role} sees its customers"
                    );
                } else {
                    assert_eq!(sibling, Err(Denied::OutOfScope), "{role}");
                    assert_eq!(
                        authorize(&p, permission, Target::Msp("m1")),
                        Err(Denied::OutOfScope),
                        "customer roles never act on the MSP"
                    );
                }
            }
        }
    }

    #[test]
    fn token_scopes_narrow_but_never_widen() {
        let p = principal(Role::CustomerAdmin, Some(&[Permission::PolicyRead]));
        assert_eq!(authorize(&p, Permission::PolicyRead, OWN_TENANT), Ok(()));
        assert_eq!(
            authorize(&p, Permission::PolicyWrite, OWN_TENANT),
            Err(Denied::TokenScope)
        );
        let p = principal(Role::CustomerAuditor, Some(&[Permission::PolicyWrite]));
        assert_eq!(
            authorize(&p, Permission::PolicyWrite, OWN_TENANT),
            Err(Denied::Role)
        );
        assert!(p.effective_permissions().is_empty());
    }

    #[test]
    fn names_round_trip() {
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Some(p));
        }
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().ok(), Some(r));
        }
        assert!(Role::MspOwner > Role::MspEngineer);
        assert!(Role::MspEngineer > Role::CustomerAdmin);
        assert!(Role::CustomerAdmin > Role::CustomerAuditor);
    }
}
