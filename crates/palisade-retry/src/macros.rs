/// `get_ref`, `get_mut` and `into_inner` for a service with an `inner` field.
macro_rules! define_inner_service_accessors {
    ($name:ident < $($param:ident),* >) => {
        impl<$($param),*> $name<$($param),*> {
            /// Gets a reference to the underlying service.
            pub fn get_ref(&self) -> &S {
                &self.inner
            }

            /// Gets a mutable reference to the underlying service.
            pub fn get_mut(&mut self) -> &mut S {
                &mut self.inner
            }

            /// Consumes `self`, returning the underlying service.
            pub fn into_inner(self) -> S {
                self.inner
            }
        }
    };
}

pub(crate) use define_inner_service_accessors;
