//! `setters!`: the options structs' builder methods (set a field, return `self`), written once.

/// Builder methods `pub fn FIELD(mut self, FIELD: T) -> Self` that set one field and return
/// `self`, one per entry of a comma-separated list:
///
/// - `FIELD: Type` stores the argument as is;
/// - `FIELD: Some(Type)` stores `Some(FIELD)`;
/// - `FIELD: Some(into Type)` takes `impl Into<Type>` and stores `Some(FIELD.into())`;
/// - `FIELD: into Type` takes `impl Into<Type>` and stores `FIELD.into()`;
/// - `fn NAME => FIELD: ...` names the method `NAME` rather than `FIELD`.
///
/// Each is documented "Sets [`FIELD`](Self::FIELD)." unless doc comments precede its entry,
/// which then document it instead.
macro_rules! setters {
    () => {};
    ($(#[doc = $doc:literal])* fn $name:ident => $field:ident: $($rest:tt)*) => {
        setters!(@entry [$($doc)*] $name $field $($rest)*);
    };
    ($(#[doc = $doc:literal])* $field:ident: $($rest:tt)*) => {
        setters!(@entry [$($doc)*] $field $field $($rest)*);
    };
    (@entry $docs:tt $name:ident $field:ident Some(into $ty:ty) $(, $($rest:tt)*)?) => {
        setters!(@fn $docs $name $field (impl Into<$ty>) Some($field.into()));
        setters!($($($rest)*)?);
    };
    (@entry $docs:tt $name:ident $field:ident Some($ty:ty) $(, $($rest:tt)*)?) => {
        setters!(@fn $docs $name $field ($ty) Some($field));
        setters!($($($rest)*)?);
    };
    (@entry $docs:tt $name:ident $field:ident into $ty:ty $(, $($rest:tt)*)?) => {
        setters!(@fn $docs $name $field (impl Into<$ty>) $field.into());
        setters!($($($rest)*)?);
    };
    (@entry $docs:tt $name:ident $field:ident $ty:ty $(, $($rest:tt)*)?) => {
        setters!(@fn $docs $name $field ($ty) $field);
        setters!($($($rest)*)?);
    };
    (@fn [] $name:ident $field:ident ($ty:ty) $value:expr) => {
        setters!(@fn [concat!("Sets [`", stringify!($field), "`](Self::", stringify!($field), ").")]
            $name $field ($ty) $value);
    };
    (@fn [$($doc:expr)+] $name:ident $field:ident ($ty:ty) $value:expr) => {
        $(#[doc = $doc])+
        pub fn $name(mut self, $field: $ty) -> Self {
            self.$field = $value;
            self
        }
    };
}
