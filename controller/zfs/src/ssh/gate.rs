//! The far side's forced command (`tidepool ssh-gate --root <dataset>`): what an SSH key
//! set up for Tidepool may run. It takes `SSH_ORIGINAL_COMMAND` apart with
//! [`super::unquote`] and admits only the zfs command lines this crate makes for a
//! replication target, with every dataset, snapshot and bookmark at or below one of its
//! roots. Whatever the client asks (a compromised source node, a bug), the far host runs
//! at most: listings, `receive -u` (never `-F`), Tidepool's holds, its owner property on
//! snapshots, destroying single snapshots or bookmarks, renaming a dataset aside, and
//! `zfs send` of what lies below a root (a restore pulls it back).

use tidepool_api::OWNER_PROPERTY;
use tidepool_api::names::{BookmarkName, DatasetName, SnapshotName};
use tidepool_api::receive_property::{ExcludedProperty, RESERVED_PROPERTIES, ReceiveProperty};

use crate::exec::{Argv, COMMAND_ENV};

/// Why a command line was refused (nothing ran).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tidepool ssh-gate: refused: {0}")]
pub struct Refused(String);

fn refuse<T>(why: impl Into<String>) -> Result<T, Refused> {
    Err(Refused(why.into()))
}

/// The argv to run for `line`, or why not. `roots` must not be empty.
pub fn admit(line: &str, roots: &[DatasetName]) -> Result<Argv, Refused> {
    let Some(words) = super::unquote(line) else {
        return refuse("not a command line Tidepool makes (each word single-quoted)");
    };
    let mut words = words.as_slice();
    // The environment Tidepool's client puts in front; the gate sets its own.
    if let [env, rest @ ..] = words
        && env == "env"
    {
        words = rest;
        while let [assignment, rest @ ..] = words
            && (*assignment == super::REMOTE_PATH
                || COMMAND_ENV
                    .iter()
                    .any(|(k, v)| *assignment == format!("{k}={v}")))
        {
            words = rest;
        }
    }
    let gate = Gate { roots };
    match words {
        [program, sub, args @ ..] if program == "zfs" => gate.zfs(sub, args)?,
        [program, sub, args @ ..] if program == "zpool" => gate.zpool(sub, args)?,
        _ => return refuse("only zfs and zpool commands are served"),
    }
    Ok(Argv::from(words.to_vec()))
}

struct Gate<'a> {
    roots: &'a [DatasetName],
}

/// Flags and their values as they come: `Some(value)` for a flag that takes one.
struct Parsed<'w> {
    flags: Vec<(&'w str, Option<&'w str>)>,
    operands: &'w [String],
}

/// Splits `args` into flags (each a whole word: `-H`, or `-o` with the next word) and the
/// operands after them. `with_value` names the flags that take a value; any flag not in
/// `plain` or `with_value` is refused.
fn parse<'w>(
    args: &'w [String],
    plain: &[&str],
    with_value: &[&str],
) -> Result<Parsed<'w>, Refused> {
    let mut flags = Vec::new();
    let mut i = 0;
    while let Some(word) = args.get(i) {
        if !word.starts_with('-') {
            break;
        }
        if plain.contains(&word.as_str()) {
            flags.push((word.as_str(), None));
            i += 1;
        } else if with_value.contains(&word.as_str()) {
            let Some(value) = args.get(i + 1) else {
                return refuse(format!("{word} needs a value"));
            };
            flags.push((word.as_str(), Some(value.as_str())));
            i += 2;
        } else {
            return refuse(format!("flag {word:?} is not served"));
        }
    }
    Ok(Parsed {
        flags,
        operands: &args[i..],
    })
}

impl Gate<'_> {
    fn zfs(&self, sub: &str, args: &[String]) -> Result<(), Refused> {
        match sub {
            "version" if args.is_empty() => Ok(()),
            "list" => {
                let p = parse(args, &["-H", "-p", "-r"], &["-o", "-t", "-d"])?;
                self.datasets(p.operands)
            }
            "get" => {
                let p = parse(args, &["-H", "-p", "-r"], &["-o", "-s", "-t", "-d"])?;
                let [_properties, targets @ ..] = p.operands else {
                    return refuse("zfs get without properties");
                };
                targets.iter().try_for_each(|t| self.any_name(t))
            }
            "holds" => {
                let p = parse(args, &["-H", "-p", "-r"], &[])?;
                p.operands.iter().try_for_each(|s| self.snapshot(s))
            }
            "hold" | "release" => {
                let p = parse(args, &[], &[])?;
                let [tag, snapshots @ ..] = p.operands else {
                    return refuse(format!("zfs {sub} without a tag"));
                };
                if !tag.starts_with("tidepool:") {
                    return refuse(format!("hold tag {tag:?} is not Tidepool's"));
                }
                if snapshots.is_empty() {
                    return refuse(format!("zfs {sub} without snapshots"));
                }
                snapshots.iter().try_for_each(|s| self.snapshot(s))
            }
            "set" => {
                let p = parse(args, &[], &[])?;
                let [assignment, target] = p.operands else {
                    return refuse("zfs set takes one property and one snapshot here");
                };
                if assignment.split_once('=').map(|(k, _)| k) != Some(OWNER_PROPERTY) {
                    return refuse(format!("only {OWNER_PROPERTY} may be set"));
                }
                self.snapshot(target)
            }
            "destroy" => {
                // Only the dry run (`-n`) takes flags: it destroys nothing.
                let p = parse(args, &["-n", "-v", "-p"], &[])?;
                if !p.flags.is_empty() && !p.flags.iter().any(|(f, _)| *f == "-n") {
                    return refuse("zfs destroy takes no flags here, but for a dry run");
                }
                let [target] = p.operands else {
                    return refuse("zfs destroy takes one snapshot list or bookmark");
                };
                self.snapshots_or_bookmark(target)
            }
            "rename" => {
                let p = parse(args, &["-u"], &[])?;
                let [from, to] = p.operands else {
                    return refuse("zfs rename takes two datasets");
                };
                let (from, to) = (self.dataset(from)?, self.dataset(to)?);
                if !to.as_str().starts_with(&format!("{from}-diverged-")) {
                    return refuse("a dataset is renamed only aside, to <dataset>-diverged-<time>");
                }
                Ok(())
            }
            "receive" | "recv" => self.receive(args),
            // Read-only: what a restore from the far host pulls back. A resume token names
            // its snapshot inside; zfs refuses one whose dataset the login may not send.
            "send" => {
                let p = parse(
                    args,
                    &["-n", "-v", "-P", "-w", "-c", "-L", "-e", "-p"],
                    &["-i", "-I", "-t"],
                )?;
                for (flag, value) in &p.flags {
                    if let ("-i" | "-I", Some(base)) = (*flag, value) {
                        self.any_name(base)?;
                    }
                }
                let resumed = p.flags.iter().any(|(f, _)| *f == "-t");
                match p.operands {
                    [] if resumed => Ok(()),
                    [snapshot] if !resumed => self.snapshot(snapshot),
                    _ => refuse("zfs send takes one snapshot (or -t and none)"),
                }
            }
            _ => refuse(format!("zfs {sub} is not served")),
        }
    }

    fn receive(&self, args: &[String]) -> Result<(), Refused> {
        let p = parse(args, &["-s", "-u", "-A"], &["-o", "-x"])?;
        let [target] = p.operands else {
            return refuse("zfs receive takes one target dataset");
        };
        self.dataset(target)?;
        let has = |flag: &str| p.flags.iter().any(|(f, _)| *f == flag);
        if has("-A") {
            return if p.flags.len() == 1 {
                Ok(())
            } else {
                refuse("zfs receive -A takes no other flag")
            };
        }
        if !has("-u") {
            return refuse("a receive is always unmounted (-u)");
        }
        for (flag, value) in &p.flags {
            match (*flag, value) {
                ("-o", Some(v)) => {
                    let Some((name, value)) = v.split_once('=') else {
                        return refuse(format!("-o {v:?} is not name=value"));
                    };
                    ReceiveProperty::new(name, value).map_err(|e| Refused(e.to_string()))?;
                }
                ("-x", Some(name)) if RESERVED_PROPERTIES.contains(name) => {}
                ("-x", Some(name)) => {
                    ExcludedProperty::new(name).map_err(|e| Refused(e.to_string()))?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn zpool(&self, sub: &str, args: &[String]) -> Result<(), Refused> {
        let p = match sub {
            "list" => parse(args, &["-H", "-p"], &["-o"])?,
            "get" => {
                let p = parse(args, &["-H", "-p"], &["-o"])?;
                let [_properties, rest @ ..] = p.operands else {
                    return refuse("zpool get without properties");
                };
                Parsed {
                    flags: p.flags,
                    operands: rest,
                }
            }
            _ => return refuse(format!("zpool {sub} is not served")),
        };
        let [pool] = p.operands else {
            return refuse(format!("zpool {sub} takes one pool here"));
        };
        if self.roots.iter().any(|r| r.pool().as_str() == pool) {
            Ok(())
        } else {
            refuse(format!("pool {pool:?} holds none of this key's roots"))
        }
    }

    fn within(&self, dataset: &DatasetName) -> Result<(), Refused> {
        let inside = |root: &DatasetName| {
            dataset == root
                || dataset
                    .as_str()
                    .strip_prefix(root.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        };
        if self.roots.iter().any(inside) {
            Ok(())
        } else {
            refuse(format!("{dataset} is outside this key's roots"))
        }
    }

    fn dataset(&self, word: &str) -> Result<DatasetName, Refused> {
        let d: DatasetName = word
            .parse()
            .map_err(|e| Refused(format!("{word:?}: {e}")))?;
        self.within(&d)?;
        Ok(d)
    }

    fn datasets(&self, words: &[String]) -> Result<(), Refused> {
        if words.is_empty() {
            return refuse("a listing names its datasets here");
        }
        words.iter().try_for_each(|w| self.dataset(w).map(drop))
    }

    fn snapshot(&self, word: &str) -> Result<(), Refused> {
        let s: SnapshotName = word
            .parse()
            .map_err(|e| Refused(format!("{word:?}: {e}")))?;
        self.within(&s.dataset())
    }

    fn any_name(&self, word: &str) -> Result<(), Refused> {
        if word.contains('@') {
            self.snapshot(word)
        } else if word.contains('#') {
            self.bookmark(word)
        } else {
            self.dataset(word).map(drop)
        }
    }

    fn bookmark(&self, word: &str) -> Result<(), Refused> {
        let b: BookmarkName = word
            .parse()
            .map_err(|e| Refused(format!("{word:?}: {e}")))?;
        self.within(&b.dataset())
    }

    /// `ds@a,b,c` (snapshots of one dataset) or `ds#bookmark`; never a dataset.
    fn snapshots_or_bookmark(&self, word: &str) -> Result<(), Refused> {
        if word.contains('#') {
            return self.bookmark(word);
        }
        let Some((dataset, list)) = word.split_once('@') else {
            return refuse(format!(
                "{word:?} is not a snapshot: datasets are never destroyed"
            ));
        };
        // Each name is parsed: an empty one, or a range (`a%b`), is no snapshot name.
        list.split(',')
            .try_for_each(|short| self.snapshot(&format!("{dataset}@{short}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd;
    use tidepool_api::values::HoldTag;
    use tidepool_wire::ReceiveOptions;

    fn roots() -> Vec<DatasetName> {
        vec!["back/tp".parse().unwrap()]
    }

    fn line(argv: &Argv) -> String {
        super::super::remote_command(argv)
    }

    fn admitted(argv: &Argv) -> Argv {
        admit(&line(argv), &roots()).unwrap_or_else(|e| panic!("{argv}: {e}"))
    }

    #[test]
    fn what_a_replication_target_needs_is_admitted_as_it_was_made() {
        let ds: DatasetName = "back/tp/app".parse().unwrap();
        let snap: SnapshotName = "back/tp/app@s1".parse().unwrap();
        let tag: HoldTag = "tidepool:ns/p".parse().unwrap();
        let props = ["guid".parse().unwrap()];
        let ok = [
            cmd::ListRequest::inventory(ds.clone(), vec![]).argv(),
            cmd::receive(&ReceiveOptions::new(ds.clone())),
            cmd::receive_abort(&ds),
            cmd::hold(&tag, std::slice::from_ref(&snap)),
            cmd::release(&tag, std::slice::from_ref(&snap)),
            cmd::holds(std::slice::from_ref(&snap), false),
            cmd::get(&props, std::slice::from_ref(&snap)),
            cmd::pool_list(&["back".parse().unwrap()]),
            cmd::pool_features(&"back".parse().unwrap(), &["bookmarks"]),
            cmd::rename_dataset(&ds, &"back/tp/app-diverged-20261204".parse().unwrap(), true),
            cmd::set(
                &snap,
                &[(
                    OWNER_PROPERTY.parse().unwrap(),
                    "ReplicationPolicy/ns/p".parse().unwrap(),
                )],
            ),
            cmd::destroy_bookmark(&"back/tp/app#b".parse().unwrap()),
            cmd::destroy_snapshots_dry_run(&ds, &["s1".parse().unwrap()]),
            cmd::version(),
            cmd::send_resume(&"1-abc-de-789c".parse().unwrap(), false),
            crate::SendRequest::full(snap.clone()).argv(),
            crate::SendRequest {
                snapshot: snap.clone(),
                base: crate::SendBase::WithIntermediates("back/tp/app@s0".parse().unwrap()),
                flags: tidepool_wire::SendFlags {
                    raw: true,
                    compressed: true,
                    ..Default::default()
                },
            }
            .estimate_argv(),
        ];
        for argv in ok {
            assert_eq!(admitted(&argv), argv);
        }
        assert_eq!(
            admit("'zfs' 'destroy' 'back/tp/app@a,b'", &roots())
                .unwrap()
                .as_slice()[2],
            "back/tp/app@a,b"
        );
    }

    #[test]
    fn anything_else_is_refused() {
        let refused = [
            // Outside the roots, or near them by prefix only.
            "'zfs' 'list' '-H' 'back/tpx'",
            "'zfs' 'list' '-H' 'back'",
            "'zfs' 'receive' '-u' 'other/tp'",
            "'zpool' 'list' '-H' 'other'",
            // Data-destroying flags and shapes.
            "'zfs' 'receive' '-F' '-u' 'back/tp/a'",
            "'zfs' 'receive' 'back/tp/a'",
            "'zfs' 'destroy' '-r' 'back/tp/a@s'",
            "'zfs' 'destroy' 'back/tp/a'",
            "'zfs' 'destroy' 'back/tp/a@s%t'",
            "'zfs' 'rename' 'back/tp/a' 'back/tp/b'",
            "'zfs' 'rollback' 'back/tp/a@s'",
            "'zfs' 'send' 'other/a@s'",
            "'zfs' 'send' '-I' 'other/a@r' 'back/tp/a@s'",
            "'zfs' 'send' '-R' 'back/tp/a@s'",
            "'zfs' 'send' '-t' '1-abc' 'back/tp/a@s'",
            "'zfs' 'send' '-w'",
            "'zfs' 'destroy' '-v' 'back/tp/a@s'",
            "'zfs' 'destroy' 'back/tp/a@'",
            "'zfs' 'destroy' 'other/a#b'",
            "'zfs' 'send' '-i' 'other/a#b' 'back/tp/a@s'",
            "'zfs' 'version' '-x'",
            "'zfs' 'receive' '-u' '-x' 'tidepool.dev:mine' 'back/tp/a'",
            "'sh' 'list' '-H' 'back'",
            "'zfs' 'set' 'mountpoint=/etc' 'back/tp/a'",
            "'zfs' 'hold' 'mine' 'back/tp/a@s'",
            "'zfs' 'receive' '-u' '-o' 'mountpoint=/etc' 'back/tp/a'",
            "'zfs' 'receive' '-u' '-o' 'canmount=on' 'back/tp/a'",
            // Not zfs, or not what the client makes.
            "'sh' '-c' 'reboot'",
            "'env' 'LD_PRELOAD=/x' 'zfs' 'list' '-H' 'back/tp'",
            "zfs list -H back/tp",
            "'zfs' 'list' '-H' 'back/tp;reboot'",
            "'zfs' 'list' '-H' 'back/tp$(reboot)'",
            "'zfs' 'list' '-H' '-o' 'name'",
        ];
        for line in refused {
            assert!(admit(line, &roots()).is_err(), "{line}");
        }
    }
}
