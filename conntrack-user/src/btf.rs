//! Kernel struct member offsets and enum values from the running kernel's BTF.
//!
//! Rust eBPF has no CO-RE relocations, so every offset the probes use is read
//! here at start-up and passed in through the `CONFIG` global. Where
//! nf_conntrack is a module, its types live in split BTF
//! (/sys/kernel/btf/nf_conntrack) on top of vmlinux.

use std::path::{Path, PathBuf};

use btf_rs::{Backend, Btf, Type};

/// Where the running kernel publishes its BTF.
pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";
/// Split BTF of nf_conntrack when it is built as a module.
pub const NF_CONNTRACK_MODULE: &str = "/sys/kernel/btf/nf_conntrack";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "this kernel publishes no BTF ({0} is missing); ctscope needs a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y (all current distribution kernels are)"
    )]
    Missing(PathBuf),
    #[error("reading BTF from {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: btf_rs::Error,
    },
    #[error("the kernel's BTF has no type `{0}`; this kernel is not supported (please report it)")]
    NoType(String),
    #[error("the kernel's BTF has no member `{member}` in `{ty}`; this kernel is not supported")]
    NoMember { ty: String, member: String },
    #[error("`{0}` is a bitfield; ctscope reads only whole bytes")]
    Bitfield(String),
    #[error("the kernel's BTF has no enum value `{0}`")]
    NoEnumValue(String),
    #[error("BTF lookup failed: {0}")]
    Lookup(#[from] btf_rs::Error),
}

pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    /// Loads vmlinux BTF, plus nf_conntrack's split BTF when it is a module.
    pub fn load() -> Result<Self, BtfError> {
        Self::from_paths(Path::new(VMLINUX), Path::new(NF_CONNTRACK_MODULE))
    }

    pub fn from_paths(vmlinux: &Path, module: &Path) -> Result<Self, BtfError> {
        if !vmlinux.exists() {
            return Err(BtfError::Missing(vmlinux.to_owned()));
        }
        // Mmap: types are decoded on demand; parsing all of vmlinux's BTF up
        // front costs tens of MiB for the few dozen members ctscope reads.
        // Kernels before 6.16 cannot mmap /sys/kernel/btf/vmlinux (ENODEV);
        // they get the parsing backend.
        let base = Btf::from_file_with_backend(vmlinux, Backend::Mmap)
            .or_else(|_| Btf::from_file_with_backend(vmlinux, Backend::Cache))
            .map_err(|source| BtfError::Read {
                path: vmlinux.to_owned(),
                source,
            })?;
        let btf = if module.exists() {
            Btf::from_split_file(module, &base).map_err(|source| BtfError::Read {
                path: module.to_owned(),
                source,
            })?
        } else {
            base
        };
        Ok(Self { btf })
    }

    /// The definition of `struct name` (or union), skipping forward
    /// declarations.
    fn composite(&self, name: &str) -> Result<btf_rs::Struct, BtfError> {
        let types = self
            .btf
            .resolve_types_by_name(name)
            .map_err(|_| BtfError::NoType(name.to_owned()))?;
        types
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) | Type::Union(s) => Some(s),
                _ => None,
            })
            .ok_or_else(|| BtfError::NoType(name.to_owned()))
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn strip(&self, mut ty: Type) -> Result<Type, BtfError> {
        for _ in 0..32 {
            let next = match &ty {
                Type::Typedef(t) => self.btf.resolve_chained_type(t)?,
                Type::Const(t) | Type::Volatile(t) | Type::Restrict(t) => {
                    self.btf.resolve_chained_type(t)?
                }
                Type::TypeTag(t) => self.btf.resolve_chained_type(t)?,
                _ => return Ok(ty),
            };
            ty = next;
        }
        Ok(ty)
    }

    /// Finds member `name` in `s`, looking through anonymous structs and
    /// unions; returns its byte offset and type.
    fn find_member(
        &self,
        s: &btf_rs::Struct,
        name: &str,
        ty_name: &str,
    ) -> Result<Option<(u32, Type)>, BtfError> {
        for m in &s.members {
            let member_name = self.btf.resolve_name(m).unwrap_or_default();
            if member_name == name {
                if m.bitfield_size().is_some_and(|bits| bits != 0) {
                    return Err(BtfError::Bitfield(format!("{ty_name}.{name}")));
                }
                let ty = self.strip(self.btf.resolve_chained_type(m)?)?;
                return Ok(Some((m.bit_offset() / 8, ty)));
            }
            if member_name.is_empty()
                && let Type::Struct(inner) | Type::Union(inner) =
                    self.strip(self.btf.resolve_chained_type(m)?)?
                && let Some((off, ty)) = self.find_member(&inner, name, ty_name)?
            {
                return Ok(Some((m.bit_offset() / 8 + off, ty)));
            }
        }
        Ok(None)
    }

    /// Byte offset of a member path such as `"nf_conn.tuplehash"` or
    /// `"nf_conntrack_net.ecache.dwork.work.func"`. Array members give the
    /// offset of element 0.
    pub fn offset(&self, path: &str) -> Result<u32, BtfError> {
        let mut parts = path.split('.');
        let root = parts.next().unwrap_or_default();
        let mut current = self.composite(root)?;
        let mut current_name = root.to_owned();
        let mut total = 0;
        let mut rest = parts.peekable();
        while let Some(member) = rest.next() {
            let (off, ty) = self
                .find_member(&current, member, &current_name)?
                .ok_or_else(|| BtfError::NoMember {
                    ty: current_name.clone(),
                    member: member.to_owned(),
                })?;
            total += off;
            if rest.peek().is_some() {
                let ty = match ty {
                    Type::Array(a) => self.strip(self.btf.resolve_chained_type(&a)?)?,
                    other => other,
                };
                current = match ty {
                    Type::Struct(s) | Type::Union(s) => s,
                    _ => {
                        return Err(BtfError::NoMember {
                            ty: format!("{current_name}.{member}"),
                            member: rest.peek().copied().unwrap_or_default().to_owned(),
                        });
                    }
                };
                current_name = format!("{current_name}.{member}");
            }
        }
        Ok(total)
    }

    /// Like [`Self::offset`], but a member this kernel was built without
    /// (e.g. `nf_conn.mark` without CONFIG_NF_CONNTRACK_MARK) gives `None`.
    pub fn optional_offset(&self, path: &str) -> Result<Option<u32>, BtfError> {
        match self.offset(path) {
            Ok(off) => Ok(Some(off)),
            Err(BtfError::NoMember { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `sizeof(struct name)`.
    pub fn size_of(&self, name: &str) -> Result<u32, BtfError> {
        Ok(self.composite(name)?.size() as u32)
    }

    /// Value of an enumerator of a named enum, e.g.
    /// `("skb_drop_reason", "SKB_DROP_REASON_NETFILTER_DROP")`.
    pub fn enum_value(&self, enum_name: &str, enumerator: &str) -> Result<u64, BtfError> {
        let missing = || BtfError::NoEnumValue(format!("{enum_name}::{enumerator}"));
        let types = self
            .btf
            .resolve_types_by_name(enum_name)
            .map_err(|_| missing())?;
        for ty in types {
            match ty {
                Type::Enum(e) => {
                    if let Some(m) = e
                        .members
                        .iter()
                        .find(|m| self.btf.resolve_name(*m).is_ok_and(|n| n == enumerator))
                    {
                        return Ok(u64::from(m.val()));
                    }
                }
                Type::Enum64(e) => {
                    if let Some(m) = e
                        .members
                        .iter()
                        .find(|m| self.btf.resolve_name(*m).is_ok_and(|n| n == enumerator))
                    {
                        return Ok(m.val());
                    }
                }
                _ => {}
            }
        }
        Err(missing())
    }

    /// Name of the enumerator of a named enum with value `value`.
    pub fn enum_name(&self, enum_name: &str, value: u64) -> Option<String> {
        for ty in self.btf.resolve_types_by_name(enum_name).ok()? {
            if let Type::Enum(e) = ty
                && let Some(m) = e.members.iter().find(|m| u64::from(m.val()) == value)
            {
                return self.btf.resolve_name(m).ok();
            }
        }
        None
    }

    /// Number of arguments of tracepoint `name` (without the hidden
    /// `void *__data` of its `btf_trace_NAME` typedef), as a BTF
    /// tracepoint program sees them; `None` if the kernel has no such
    /// tracepoint.
    pub fn tracepoint_args(&self, name: &str) -> Option<usize> {
        let proto = self.tracepoint_proto(name)?;
        Some(proto.parameters.len().saturating_sub(1))
    }

    /// The function prototype behind `btf_trace_NAME` (typedef -> pointer ->
    /// prototype), hidden `void *__data` parameter included.
    fn tracepoint_proto(&self, name: &str) -> Option<btf_rs::FuncProto> {
        let types = self
            .btf
            .resolve_types_by_name(&format!("btf_trace_{name}"))
            .ok()?;
        let mut ty = types.into_iter().next()?;
        for _ in 0..8 {
            ty = match ty {
                Type::Typedef(t) => self.btf.resolve_chained_type(&t).ok()?,
                Type::Ptr(p) => self.btf.resolve_chained_type(&p).ok()?,
                Type::FuncProto(f) => return Some(f),
                _ => return None,
            };
        }
        None
    }

    /// Whether argument `index` (from 0, as a BTF tracepoint program
    /// numbers them) of tracepoint `name` is a pointer to `struct
    /// strukt`: `kmem_cache_free`'s third argument is the cache since 6.1,
    /// its name (`const char *`) in 5.12-6.0.
    pub fn tracepoint_arg_points_to(&self, name: &str, index: usize, strukt: &str) -> bool {
        let Some(proto) = self.tracepoint_proto(name) else {
            return false;
        };
        // Parameter 0 is the hidden `void *__data`.
        let Some(param) = proto.parameters.get(index + 1) else {
            return false;
        };
        let Some(Type::Ptr(ptr)) = self
            .btf
            .resolve_chained_type(param)
            .ok()
            .and_then(|t| self.strip(t).ok())
        else {
            return false;
        };
        match self
            .btf
            .resolve_chained_type(&ptr)
            .ok()
            .and_then(|t| self.strip(t).ok())
        {
            Some(Type::Struct(st)) => self.btf.resolve_name(&st).is_ok_and(|n| n == strukt),
            _ => false,
        }
    }

    /// Does the kernel have this BTF type (e.g. a tracepoint's
    /// `btf_trace_kfree_skb` typedef)?
    pub fn has_type(&self, name: &str) -> bool {
        self.btf
            .resolve_ids_by_name(name)
            .is_ok_and(|ids| !ids.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel() -> KernelBtf {
        KernelBtf::load().expect("these machines have vmlinux BTF")
    }

    #[test]
    fn conntrack_layout_is_consistent() {
        let btf = kernel();
        let tuplehash = btf.offset("nf_conn.tuplehash").expect("tuplehash");
        let th_size = btf.size_of("nf_conntrack_tuple_hash").expect("size");
        let tuple = btf.offset("nf_conntrack_tuple_hash.tuple").expect("tuple");
        let pprev = btf
            .offset("nf_conntrack_tuple_hash.hnnode.pprev")
            .expect("pprev");
        // The tuple follows the two-pointer hlist_nulls_node.
        assert_eq!(pprev, 8);
        assert_eq!(tuple, 16);
        assert_eq!(btf.size_of("nf_conntrack_tuple").expect("tuple size"), 40);
        assert_eq!(th_size, tuple + 40);
        // Both directions precede status in struct nf_conn.
        let status = btf.offset("nf_conn.status").expect("status");
        assert!(
            status >= tuplehash + 2 * th_size,
            "{status} {tuplehash} {th_size}"
        );
        // Nested and array paths agree with their parts.
        assert_eq!(
            btf.offset("nf_conn.tuplehash.tuple.dst.protonum")
                .expect("protonum"),
            tuplehash + tuple + btf.offset("nf_conntrack_tuple.dst.protonum").expect("p")
        );
    }

    #[test]
    fn anonymous_members_are_searched() {
        let btf = kernel();
        // sk_buff.dev and network_header sit inside anonymous unions/structs.
        let dev = btf.offset("sk_buff.dev").expect("dev");
        let nh = btf
            .offset("sk_buff.network_header")
            .expect("network_header");
        let size = btf.size_of("sk_buff").expect("size");
        assert!(dev < size && nh < size);
        assert_ne!(dev, nh);
    }

    #[test]
    fn pernet_conntrack_struct_is_found() {
        let btf = kernel();
        assert_eq!(btf.offset("nf_conntrack_net.count").expect("count"), 0);
        let func = btf
            .offset("nf_conntrack_net.ecache.dwork.work.func")
            .expect("func");
        assert!(func > 0 && func < btf.size_of("nf_conntrack_net").expect("size"));
    }

    #[test]
    fn enums_resolve() {
        let btf = kernel();
        let v = |e, m| btf.enum_value(e, m).expect(m);
        assert_eq!(v("ip_conntrack_status", "IPS_CONFIRMED_BIT"), 3);
        assert_eq!(v("ip_conntrack_info", "IP_CT_UNTRACKED"), 7);
        assert!(v("skb_drop_reason", "SKB_DROP_REASON_NETFILTER_DROP") > 0);
        assert!(btf.enum_value("skb_drop_reason", "NO_SUCH_REASON").is_err());
        assert_eq!(
            btf.enum_name("tcp_conntrack", 3).as_deref(),
            Some("TCP_CONNTRACK_ESTABLISHED")
        );
    }

    #[test]
    fn errors_name_what_is_missing() {
        let btf = kernel();
        let err = btf.offset("nf_conn.no_such_member").expect_err("missing");
        assert!(err.to_string().contains("no_such_member"), "{err}");
        let err = btf.offset("no_such_struct_ctscope.x").expect_err("missing");
        assert!(err.to_string().contains("no_such_struct_ctscope"), "{err}");
        assert_eq!(
            btf.optional_offset("nf_conn.no_such_member").expect("ok"),
            None
        );
        let err = KernelBtf::from_paths(Path::new("/nonexistent/vmlinux"), Path::new("/x"))
            .err()
            .expect("missing file");
        assert!(err.to_string().contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
    }
}
