//! The directory: accounts, their users (extensions) and users' devices (SIP credentials).
//!
//! A device is what registers and is rung; a user owns devices and has the extension; an account
//! groups users under a SIP domain. Metaflows attach at all three levels and merge account <
//! device < user, as in Kazoo. A user may give `username`/`password`/`contact` directly instead of
//! a `devices` list: that is one device (with `username` defaulting to the extension).

use std::collections::HashMap;
use std::sync::Arc;

use crate::diagnostics::{Pos, Report};
use crate::engine::metaflow::Metaflow;
use crate::keys::parse_keys;
use crate::yaml::Node;
use crate::yaml::fields::{Fields, non_empty_string, string};

use super::settings::sip_uri;

#[derive(Clone, Debug, Default)]
pub struct Directory {
    pub accounts: Vec<Account>,
}

#[derive(Clone, Debug)]
pub struct Account {
    pub name: String,
    /// SIP domain, also the digest realm.
    pub domain: String,
    pub metaflow: Option<MetaflowRef>,
    pub users: Vec<User>,
    /// `http://` URLs that receive every event of the account's calls (POSTed as JSON).
    pub webhooks: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct User {
    pub extension: String,
    /// Display name, for caller ID.
    pub name: Option<String>,
    pub metaflow: Option<MetaflowRef>,
    pub devices: Vec<Device>,
    /// The merged metaflow for this user without a device layer (account < user).
    pub flow: Option<Arc<Metaflow>>,
}

#[derive(Clone, Debug)]
pub struct Device {
    pub username: String,
    /// `None`: the device cannot register and is reached only at its static contact.
    pub password: Option<String>,
    /// A fixed SIP URI where the device is rung when it is not registered.
    pub contact: Option<String>,
    pub metaflow: Option<MetaflowRef>,
    /// The merged metaflow of calls on this device (account < device < user).
    pub flow: Option<Arc<Metaflow>>,
}

/// A metaflow named in the config, with where it was named (for "not found" errors).
#[derive(Clone, Debug)]
pub struct MetaflowRef {
    pub name: String,
    pub pos: Pos,
}

/// One party of a call, as the directory knows it.
#[derive(Clone, Copy, Debug)]
pub struct Party<'a> {
    pub account: &'a Account,
    pub user: &'a User,
    pub device: Option<&'a Device>,
}

impl Party<'_> {
    /// The metaflow that applies to this party's leg.
    pub fn flow(&self) -> Option<&Arc<Metaflow>> {
        match self.device {
            Some(d) => d.flow.as_ref(),
            None => self.user.flow.as_ref(),
        }
    }
}

impl Directory {
    pub fn user_count(&self) -> usize {
        self.accounts.iter().map(|a| a.users.len()).sum()
    }

    pub fn device_count(&self) -> usize {
        self.accounts
            .iter()
            .flat_map(|a| &a.users)
            .map(|u| u.devices.len())
            .sum()
    }

    pub fn account(&self, name: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.name == name)
    }

    /// Finds a party by device username or user extension, optionally qualified as
    /// `name@account` or `name@domain`. A user with several devices whose metaflows differ
    /// must be named by device.
    pub fn find_party(&self, spec: &str) -> Result<Party<'_>, String> {
        let (name, scope) = match spec.split_once('@') {
            Some((n, s)) => (n, Some(s)),
            None => (spec, None),
        };
        let accounts: Vec<&Account> = self
            .accounts
            .iter()
            .filter(|a| scope.is_none_or(|s| a.name == s || a.domain == s))
            .collect();
        if accounts.is_empty() {
            return Err(format!(
                "no account or domain `{}` in the config",
                scope.unwrap_or("")
            ));
        }
        let mut found: Vec<Party<'_>> = Vec::new();
        for account in &accounts {
            for user in &account.users {
                for device in &user.devices {
                    if device.username == name {
                        found.push(Party {
                            account,
                            user,
                            device: Some(device),
                        });
                    }
                }
            }
        }
        if found.is_empty() {
            for account in &accounts {
                for user in account.users.iter().filter(|u| u.extension == name) {
                    let device = match user.devices.as_slice() {
                        [only] => Some(only),
                        devices => {
                            let differ = devices.windows(2).any(|w| {
                                w[0].metaflow.as_ref().map(|m| &m.name)
                                    != w[1].metaflow.as_ref().map(|m| &m.name)
                            });
                            if differ {
                                let names: Vec<&str> =
                                    devices.iter().map(|d| d.username.as_str()).collect();
                                return Err(format!(
                                    "user `{name}` has devices with different metaflows; name one of: {}",
                                    names.join(", ")
                                ));
                            }
                            devices.first()
                        }
                    };
                    found.push(Party {
                        account,
                        user,
                        device,
                    });
                }
            }
        }
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(format!("no user or device `{name}` in the config")),
            many => {
                let options: Vec<String> = many
                    .iter()
                    .map(|p| format!("{name}@{}", p.account.name))
                    .collect();
                Err(format!(
                    "`{name}` is in several accounts; name one of: {}",
                    options.join(", ")
                ))
            }
        }
    }
}

/// Reads `accounts:` (a mapping from account name to account). Metaflow references are kept
/// unresolved; the loader resolves them against the metaflow files.
///
/// Best effort: what could be read is returned even when there were problems, so references
/// can still be checked and every problem reported in one run.
pub fn read_directory(node: Option<&Node>, report: &mut Report) -> Directory {
    let Some(node) = node else {
        return Directory::default();
    };
    if Fields::of(node, "`accounts`", report).is_none() {
        return Directory::default();
    }
    let mut accounts = Vec::new();
    let mut domains: HashMap<String, Pos> = HashMap::new();
    for (name_node, account) in node.as_map().unwrap_or(&[]) {
        let Some(name) = string(name_node, "account", report) else {
            continue;
        };
        let Some((a, domain_pos)) = read_account(&name, account, report) else {
            continue;
        };
        if let Some(first) = domains.get(&a.domain) {
            report.error(
                domain_pos,
                format!(
                    "domain `{}` is already used by another account (line {})",
                    a.domain, first.line
                ),
            );
        } else {
            domains.insert(a.domain.clone(), domain_pos);
        }
        accounts.push(a);
    }
    Directory { accounts }
}

fn metaflow_ref(f: &mut Fields<'_>, report: &mut Report) -> Option<MetaflowRef> {
    let n = f.get("metaflow").filter(|n| !n.is_null())?;
    non_empty_string(n, "metaflow", report).map(|name| MetaflowRef { name, pos: n.pos })
}

fn read_account(name: &str, node: &Node, report: &mut Report) -> Option<(Account, Pos)> {
    let mut f = Fields::of(node, &format!("account `{name}`"), report)?;
    let domain_node = f.get("domain");
    let metaflow = metaflow_ref(&mut f, report);
    let users_node = f.get("users");
    let webhooks_node = f.get("webhooks");
    f.finish(report);
    let webhooks = webhooks_node.map_or_else(Vec::new, |n| webhook_urls(n, report));
    let (domain, domain_pos) = match domain_node {
        Some(n) => (non_empty_string(n, "domain", report), n.pos),
        None => {
            report.error(
                node.pos,
                format!("account `{name}` needs a `domain` (its SIP domain, e.g. 127.0.0.1)"),
            );
            (None, node.pos)
        }
    };
    let mut users = Vec::new();
    let mut extensions: HashMap<String, Pos> = HashMap::new();
    let mut usernames: HashMap<String, Pos> = HashMap::new();
    if let Some(list) = users_node {
        match &list.kind {
            crate::yaml::NodeKind::Seq(items) => {
                for item in items {
                    let Some((user, ext_pos, device_pos)) = read_user(item, report) else {
                        continue;
                    };
                    if let Some(first) = extensions.get(&user.extension) {
                        report.error(
                            ext_pos,
                            format!(
                                "duplicate extension `{}` (first at line {})",
                                user.extension, first.line
                            ),
                        );
                    } else {
                        extensions.insert(user.extension.clone(), ext_pos);
                    }
                    for (device, pos) in user.devices.iter().zip(device_pos) {
                        if let Some(first) = usernames.get(&device.username) {
                            report.error(
                                pos,
                                format!(
                                    "duplicate SIP username `{}` (first at line {})",
                                    device.username, first.line
                                ),
                            );
                        } else {
                            usernames.insert(device.username.clone(), pos);
                        }
                    }
                    users.push(user);
                }
            }
            crate::yaml::NodeKind::Null => {}
            _ => {
                report.error(
                    list.pos,
                    format!("`users`: expected a list, found {}", list.describe()),
                );
            }
        }
    }
    Some((
        Account {
            name: name.to_string(),
            domain: domain?,
            metaflow,
            users,
            webhooks,
        },
        domain_pos,
    ))
}

/// `webhooks`: a list of `http://host:port/path` URLs (plain HTTP: a webhook receiver on the
/// same host or network; TLS belongs to a proxy in front of it).
fn webhook_urls(node: &Node, report: &mut Report) -> Vec<String> {
    let items = match &node.kind {
        crate::yaml::NodeKind::Seq(items) => items.as_slice(),
        crate::yaml::NodeKind::Null => return Vec::new(),
        _ => {
            report.error(
                node.pos,
                format!(
                    "`webhooks`: expected a list of URLs, found {}",
                    node.describe()
                ),
            );
            return Vec::new();
        }
    };
    let mut urls = Vec::new();
    for item in items {
        let Some(url) = non_empty_string(item, "webhook URL", report) else {
            continue;
        };
        match crate::http_url::parse(&url) {
            Ok(_) => urls.push(url),
            Err(why) => report.error(item.pos, format!("webhook URL `{url}`: {why}")),
        }
    }
    urls
}

/// A user, the position of its extension, and the position of each device's username.
fn read_user(node: &Node, report: &mut Report) -> Option<(User, Pos, Vec<Pos>)> {
    let mut f = Fields::of(node, "user", report)?;
    let ext_node = f.get("extension");
    let name = f.get("name").and_then(|n| string(n, "name", report));
    let metaflow = metaflow_ref(&mut f, report);
    let shorthand = [f.get("username"), f.get("password"), f.get("contact")];
    let devices_node = f.get("devices");
    f.finish(report);
    let Some(ext_node) = ext_node else {
        report.error(
            node.pos,
            "user needs an `extension` (the keys that dial it, e.g. \"1001\")",
        );
        return None;
    };
    // Extensions are dialled with keys, and keys A-D arrive in upper case.
    let extension = non_empty_string(ext_node, "extension", report)?.to_ascii_uppercase();
    if let Err(e) = parse_keys(&extension) {
        report.error(ext_node.pos, format!("extension `{extension}`: {e}"));
    }
    let mut devices = Vec::new();
    let mut positions = Vec::new();
    let has_shorthand = shorthand.iter().any(Option::is_some);
    match (devices_node, has_shorthand) {
        (Some(d), true) => {
            report.error(
                d.pos,
                "give either `devices` or `username`/`password`/`contact` on the user, not both",
            );
        }
        (Some(list), false) => match &list.kind {
            crate::yaml::NodeKind::Seq(items) => {
                for (d, pos) in items
                    .iter()
                    .filter_map(|item| read_device(item, None, report))
                {
                    devices.push(d);
                    positions.push(pos);
                }
            }
            _ => report.error(
                list.pos,
                format!("`devices`: expected a list, found {}", list.describe()),
            ),
        },
        (None, true) => {
            if let Some((d, pos)) = read_device(node, Some(&extension), report) {
                devices.push(d);
                positions.push(pos);
            }
        }
        (None, false) => report.warning(
            ext_node.pos,
            format!("user `{extension}` has no device: it cannot register and calls to it fail"),
        ),
    }
    Some((
        User {
            extension,
            name,
            metaflow,
            devices,
            flow: None,
        },
        ext_node.pos,
        positions,
    ))
}

/// Reads a device entry, or (with `default_username`) the device fields written on a user.
fn read_device(
    node: &Node,
    default_username: Option<&str>,
    report: &mut Report,
) -> Option<(Device, Pos)> {
    let (username_node, password_node, contact_node, metaflow) = if default_username.is_some() {
        // Fields on the user itself; the user's reader already checked for unknown keys.
        (
            node.get("username"),
            node.get("password"),
            node.get("contact"),
            None,
        )
    } else {
        let mut f = Fields::of(node, "device", report)?;
        let u = f.get("username");
        let p = f.get("password");
        let c = f.get("contact");
        let m = metaflow_ref(&mut f, report);
        f.finish(report);
        (u, p, c, m)
    };
    let (username, pos) = match (username_node, default_username) {
        (Some(n), _) => (non_empty_string(n, "username", report), n.pos),
        (None, Some(ext)) => (Some(ext.to_string()), node.pos),
        (None, None) => {
            report.error(node.pos, "device needs a `username` (its SIP user name)");
            (None, node.pos)
        }
    };
    if let (Some(u), Some(n)) = (&username, username_node)
        && u.contains(|c: char| c.is_whitespace() || c == '@' || c == ':')
    {
        report.error(
            n.pos,
            format!("SIP username `{u}` may not contain spaces, `@` or `:`"),
        );
    }
    let password = password_node.and_then(|n| non_empty_string(n, "password", report));
    let contact = contact_node.and_then(|n| {
        match non_empty_string(n, "contact", report).map(|c| sip_uri(&c)) {
            Some(Ok(uri)) => Some(uri),
            Some(Err(e)) => {
                report.error(n.pos, format!("`contact`: {e}"));
                None
            }
            None => None,
        }
    });
    let username = username?;
    if password_node.is_none() && contact_node.is_none() {
        report.error(
            pos,
            format!("device `{username}` has neither a `password` (to register) nor a `contact` (to be rung)"),
        );
    }
    Some((
        Device {
            username,
            password,
            contact,
            metaflow,
            flow: None,
        },
        pos,
    ))
}
